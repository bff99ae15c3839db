// qpass RTL layer library: element-wise and pooling layers (written for qpass, Apache-2.0). One iteration per
// clock as in qpass_layers.sv; PE elements per word; channel slot c = nf * PE + pe with nf counting words modulo
// NF = C / PE.

// the threshold activation of PE lanes: y = OUT_BIAS + OUT_SCALE * #{t : v >= T[t]} (v signed, VB bits per lane;
// lane p's NT thresholds at bits [(p*NT + t)*TB +: TB] of thr). BS = 0: NT comparators and their count. BS = 1
// (large threshold sets, each lane's thresholds non-decreasing, as FINN's thresholding unit): a binary search,
// N = clog2(NT + 1) comparators one after the other, stage i comparing with the threshold its i result bits so far
// select (a 2^i-way multiplexer); the table padded with T[NT-1] to 2^N - 1 entries and the count clipped to NT.
// Stages i > 0 (and stage 0 with NF > 1 row folds) read their candidates from a ROM per stage instead (FINN's
// layout, one table per lane): file {TFILE, "<i>_<lane>"} holds word nf*2^i + j = the threshold lane p's stage i
// compares with after result bits j in row fold nf, read asynchronously at the row fold nfq of v (thr then feeds only stage 0 of one row fold).
module qp_activate #(
  parameter int PE = 1, parameter int VB = 8, parameter int NT = 1, parameter int TB = 8, parameter int OB = 4,
  parameter int OUT_SCALE = 1, parameter int OUT_BIAS = 0, parameter int BS = 0, parameter int NF = 1,
  parameter TFILE = "t.mem"
) (
  input logic [PE*VB-1:0] v, input logic [(BS ? 1 : PE*NT*TB)-1:0] thr, input logic [31:0] nfq,
  output logic [PE*OB-1:0] y
);
  localparam int NTW = $clog2(NT + 1) + 1;
  localparam int N = $clog2(NT + 1);
  for (genvar p = 0; p < PE; p++) begin : g_pe
    logic [NTW-1:0] cnt;
    if (BS) begin : g_bs
      logic [N-1:0] pre [0:N];
      assign pre[0] = '0;
      for (genvar i = 0; i < N; i++) begin : g_st
        localparam int B = N - 1 - i;
        // the candidates of stage i: count k = (j << (B + 1)) + (1 << B) tested as v >= T[k - 1]
        logic [TB-1:0] t;
        // stage ROMs for every stage, also with one row fold (a multiplexer tree over the constant candidates of all
        // 255 steps took Yosys over 16 min per 8-bit PE array, session 9); this lane's own TB-bit table (file
        // "<i>_<lane, 3 digits>"): Yosys keeps every bit of a shared PE*TB-bit table in each lane's copy (CNN 8-bit
        // conv1: 1.1 Mbit of ROM for 16 lanes). Stage 0 with one row fold: a one-word ROM, a constant to Yosys.
        logic [TB-1:0] srom [0:NF*(1 << i)-1];
        initial $readmemh({TFILE, 8'(48 + i), "_", 8'(48 + p / 100), 8'(48 + p / 10 % 10), 8'(48 + p % 10)}, srom);
        wire [31:0] a = (i == 0) ? ((NF > 1) ? nfq : 32'd0) : ((NF > 1) ? nfq << i : 32'd0)
                                                                | 32'(pre[i][N-1 -: ((i == 0) ? 1 : i)]);
        assign t = srom[a];
        wire ge = $signed(v[p*VB +: VB]) >= $signed(t);
        assign pre[i + 1] = pre[i] | (ge ? (N'(1) << B) : N'(0));
      end
      assign cnt = (pre[N] > N'(NT)) ? NTW'(NT) : NTW'(pre[N]);
    end else begin : g_par
      always_comb begin
        cnt = '0;
        for (int t = 0; t < NT; t++)
          cnt = cnt + (($signed(v[p*VB +: VB]) >= $signed(thr[(p*NT + t)*TB +: TB])) ? NTW'(1) : NTW'(0));
      end
    end
    wire signed [31:0] yv = OUT_BIAS + OUT_SCALE * $signed({1'b0, cnt});
    assign y[p*OB +: OB] = yv[OB-1:0];
  end
endmodule

// standalone MultiThreshold: y = OUT_BIAS + OUT_SCALE * #{t : x >= T[c][t]}; threshold word nf holds T[nf*PE + pe][t]
// at bits [(pe*NT + t)*TB +: TB]
module qp_threshold #(
  parameter int C = 1, parameter int PE = 1, parameter int NPIX = 1, parameter int IB = 8, parameter int I_SIGNED = 0,
  parameter int OB = 4, parameter int NT = 1, parameter int TB = 8, parameter int OUT_SCALE = 1,
  parameter int OUT_BIAS = 0, parameter TFILE = "t.mem", parameter int BS = 0
) (
  input  logic clk, input logic rst,
  input  logic [PE*IB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [PE*OB-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int NF = C / PE, NFW = (NF > 1) ? $clog2(NF) : 1;
  logic [NFW-1:0] nf, nf_next;
  wire en = in_valid && out_ready;
  assign in_ready = out_ready;
  assign out_valid = in_valid;
  assign nf_next = (nf == NFW'(NF - 1)) ? '0 : nf + 1'b1;
  always_ff @(posedge clk) if (rst) nf <= '0; else if (en) nf <= nf_next;
  localparam int TW = BS ? 1 : PE*NT*TB;  // a binary search reads its per-lane stage ROMs alone
  logic [TW-1:0] tq;
  if (BS) begin : g_nothr
    assign tq = '0;
  end else begin : g_thr
    logic [TW-1:0] trom [0:NF-1];
    initial $readmemh(TFILE, trom);
    always_ff @(posedge clk) if (rst || en) tq <= trom[rst ? '0 : nf_next];
  end
  logic [NFW-1:0] nfq;
  always_ff @(posedge clk) if (rst || en) nfq <= rst ? '0 : nf_next;
  logic [PE*(IB+1)-1:0] xs;
  for (genvar p = 0; p < PE; p++) begin : g_pe
    assign xs[p*(IB+1) +: IB+1] = I_SIGNED ? {in_data[p*IB + IB - 1], in_data[p*IB +: IB]} : {1'b0, in_data[p*IB +: IB]};
  end
  qp_activate #(.PE(PE), .VB(IB + 1), .NT(NT), .TB(TB), .OB(OB), .OUT_SCALE(OUT_SCALE), .OUT_BIAS(OUT_BIAS),
                .BS(BS), .NF(NF), .TFILE(TFILE)) u_act (.v(xs), .thr(tq), .nfq(32'(nfq)), .y(out_data));
endmodule

// residual join: y = KA * a + KB * b element by element (both streams in the same order)
module qp_add #(
  parameter int PE = 1, parameter int AB_ = 8, parameter int A_SIGNED = 0, parameter int BB = 8,
  parameter int B_SIGNED = 0, parameter int OB = 9, parameter int KA = 1, parameter int KB = 1
) (
  input  logic clk, input logic rst,
  input  logic [PE*AB_-1:0] a_data, input logic a_valid, output logic a_ready,
  input  logic [PE*BB-1:0] b_data, input logic b_valid, output logic b_ready,
  output logic [PE*OB-1:0] out_data, output logic out_valid, input logic out_ready
);
  assign a_ready = b_valid && out_ready;
  assign b_ready = a_valid && out_ready;
  assign out_valid = a_valid && b_valid;
  for (genvar p = 0; p < PE; p++) begin : g_pe
    wire signed [AB_:0] a = A_SIGNED ? $signed({a_data[p*AB_ + AB_ - 1], a_data[p*AB_ +: AB_]})
                                     : $signed({1'b0, a_data[p*AB_ +: AB_]});
    wire signed [BB:0] b = B_SIGNED ? $signed({b_data[p*BB + BB - 1], b_data[p*BB +: BB]})
                                    : $signed({1'b0, b_data[p*BB +: BB]});
    wire signed [31:0] y = KA * a + KB * b;
    assign out_data[p*OB +: OB] = y[OB-1:0];
  end
endmodule

// per channel slot multiply (MUL) or add of a constant table; parameter word nf holds P[nf*PE + pe] at bits
// [pe*PB +: PB]
module qp_channelwise #(
  parameter int C = 1, parameter int PE = 1, parameter int NPIX = 1, parameter int MUL = 1, parameter int IB = 8,
  parameter int I_SIGNED = 0, parameter int PB = 8, parameter int OB = 8, parameter PFILE = "p.mem"
) (
  input  logic clk, input logic rst,
  input  logic [PE*IB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [PE*OB-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int NF = C / PE, NFW = (NF > 1) ? $clog2(NF) : 1;
  logic [NFW-1:0] nf, nf_next;
  wire en = in_valid && out_ready;
  assign in_ready = out_ready;
  assign out_valid = in_valid;
  assign nf_next = (nf == NFW'(NF - 1)) ? '0 : nf + 1'b1;
  always_ff @(posedge clk) if (rst) nf <= '0; else if (en) nf <= nf_next;
  logic [PE*PB-1:0] prom [0:NF-1];
  logic [PE*PB-1:0] pq;
  initial $readmemh(PFILE, prom);
  always_ff @(posedge clk) if (rst || en) pq <= prom[rst ? '0 : nf_next];
  for (genvar p = 0; p < PE; p++) begin : g_pe
    wire signed [IB:0] x = I_SIGNED ? $signed({in_data[p*IB + IB - 1], in_data[p*IB +: IB]})
                                    : $signed({1'b0, in_data[p*IB +: IB]});
    wire signed [PB-1:0] k = $signed(pq[p*PB +: PB]);
    wire signed [63:0] y = MUL ? x * k : x + k;
    assign out_data[p*OB +: OB] = y[OB-1:0];
  end
endmodule

// global accumulation pool: the sum over NPIX pixels per channel (NPIX*CF input iterations, then CF output ones)
module qp_global_sum #(
  parameter int C = 1, parameter int PE = 1, parameter int NPIX = 1, parameter int IB = 8, parameter int I_SIGNED = 0,
  parameter int OB = 16
) (
  input  logic clk, input logic rst,
  input  logic [PE*IB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [PE*OB-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int CF = C / PE, CW = (CF > 1) ? $clog2(CF) : 1, PW = $clog2(NPIX + 1);
  logic [PE*OB-1:0] acc [0:CF-1];
  logic wphase;
  logic [CW-1:0] c;
  logic [PW-1:0] pix;
  wire rd = !wphase, wr = wphase;
  wire en = (!rd || in_valid) && (!wr || out_ready);
  assign in_ready = rd && (!wr || out_ready);
  assign out_valid = wr && (!rd || in_valid);
  wire [PE*OB-1:0] cur = acc[c];
  logic [PE*OB-1:0] nxt;
  for (genvar p = 0; p < PE; p++) begin : g_pe
    wire signed [IB:0] x = I_SIGNED ? $signed({in_data[p*IB + IB - 1], in_data[p*IB +: IB]})
                                    : $signed({1'b0, in_data[p*IB +: IB]});
    wire signed [OB-1:0] prev = (pix == '0) ? '0 : $signed(cur[p*OB +: OB]);
    assign nxt[p*OB +: OB] = prev + x;
  end
  assign out_data = cur;
  always_ff @(posedge clk) if (en && rd) acc[c] <= nxt;
  wire last_c = (c == CW'(CF - 1));
  always_ff @(posedge clk) begin
    if (rst) begin
      wphase <= 1'b0; c <= '0; pix <= '0;
    end else if (en) begin
      c <= last_c ? '0 : c + 1'b1;
      if (rd && last_c) begin
        if (pix == PW'(NPIX - 1)) begin pix <= '0; wphase <= 1'b1; end else pix <= pix + 1'b1;
      end
      if (wr && last_c) wphase <= 1'b0;
    end
  end
endmodule

// Channel concatenation of N <= 4 streams (FINN StreamingConcat): per pixel, W0 words of in0, then W1 of in1, ...
// (Wi = Ci / SIMD), one word per cycle passed through with each element sign- (ISi) or zero-extended from IBi to
// OB bits. Inputs past N are not read (leave them unconnected).
module qp_concat #(
  parameter int N = 2, parameter int SIMD = 1, parameter int OB = 8,
  parameter int W0 = 1, parameter int W1 = 1, parameter int W2 = 1, parameter int W3 = 1,
  parameter int IB0 = 8, parameter int IB1 = 8, parameter int IB2 = 8, parameter int IB3 = 8,
  parameter int IS0 = 0, parameter int IS1 = 0, parameter int IS2 = 0, parameter int IS3 = 0
) (
  input  logic clk, input logic rst,
  input  logic [SIMD*IB0-1:0] in0_data, input logic in0_valid, output logic in0_ready,
  input  logic [SIMD*IB1-1:0] in1_data, input logic in1_valid, output logic in1_ready,
  input  logic [SIMD*IB2-1:0] in2_data, input logic in2_valid, output logic in2_ready,
  input  logic [SIMD*IB3-1:0] in3_data, input logic in3_valid, output logic in3_ready,
  output logic [SIMD*OB-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int WMAX = (W0 > W1 ? W0 : W1) > (W2 > W3 ? W2 : W3) ? (W0 > W1 ? W0 : W1) : (W2 > W3 ? W2 : W3);
  localparam int JW = (WMAX > 1) ? $clog2(WMAX) : 1;
  logic [1:0] port;
  logic [JW-1:0] j;
  logic [SIMD*OB-1:0] x0, x1, x2, x3;
  for (genvar s = 0; s < SIMD; s++) begin : g_ext
    assign x0[s*OB +: OB] = IS0 ? OB'($signed(in0_data[s*IB0 +: IB0])) : OB'(in0_data[s*IB0 +: IB0]);
    assign x1[s*OB +: OB] = IS1 ? OB'($signed(in1_data[s*IB1 +: IB1])) : OB'(in1_data[s*IB1 +: IB1]);
    assign x2[s*OB +: OB] = IS2 ? OB'($signed(in2_data[s*IB2 +: IB2])) : OB'(in2_data[s*IB2 +: IB2]);
    assign x3[s*OB +: OB] = IS3 ? OB'($signed(in3_data[s*IB3 +: IB3])) : OB'(in3_data[s*IB3 +: IB3]);
  end
  wire [JW-1:0] last = (port == 2'd0) ? JW'(W0 - 1) : (port == 2'd1) ? JW'(W1 - 1)
                     : (port == 2'd2) ? JW'(W2 - 1) : JW'(W3 - 1);
  always_comb begin
    case (port)
      2'd0: begin out_data = x0; out_valid = in0_valid; end
      2'd1: begin out_data = x1; out_valid = in1_valid; end
      2'd2: begin out_data = x2; out_valid = in2_valid; end
      default: begin out_data = x3; out_valid = in3_valid; end
    endcase
  end
  assign in0_ready = (port == 2'd0) && out_ready;
  assign in1_ready = (port == 2'd1) && out_ready;
  assign in2_ready = (port == 2'd2) && out_ready;
  assign in3_ready = (port == 2'd3) && out_ready;
  always_ff @(posedge clk) begin
    if (rst) begin
      port <= '0; j <= '0;
    end else if (out_valid && out_ready) begin
      if (j == last) begin
        j <= '0;
        port <= (port == 2'(N - 1)) ? '0 : port + 1'b1;
      end else begin
        j <= j + 1'b1;
      end
    end
  end
endmodule
