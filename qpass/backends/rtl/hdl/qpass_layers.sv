// qpass RTL layer library: compute layers (written for qpass, Apache-2.0).
//
// Each layer runs the iteration program of its cost model (qpass.hw.kinds, StreamProgram): one iteration per
// clock when its input word (if the iteration reads) is valid and its output FIFO (if it writes) has room, so the
// cycles per frame are exactly the model's. Counters, no division or modulo by non-powers of two. Weights and
// thresholds are ROMs initialised by $readmemh (one hex word per line) with a registered read addressed by the
// next iteration's counters (block-RAM inferable). Output words go into a FIFO (see qpass_stream.sv).
// RUNTIME = 1 (mem_mode runtime): the weight and threshold memories are RAMs with a write port (wmem_* / tmem_*:
// one word per cycle while wmem_we / tmem_we, before streaming) instead of $readmemh ROMs; RUNTIME = 0 ties them off.

// The threshold table of a matrix layer (NF words of W bits, none when NT == 0): a ROM ($readmemh FILE) or,
// RUNTIME, a RAM written through we/waddr/wdata before streaming; q is registered, read at raddr when re.
module qp_tmem #(parameter int NF = 1, parameter int W = 8, parameter int NT = 1, parameter int RUNTIME = 0,
                 parameter FILE = "t.mem") (
  input  logic clk, input logic re, input logic [31:0] raddr,
  input  logic we, input logic [31:0] waddr, input logic [((NT > 0) ? W : 1)-1:0] wdata,
  output logic [((NT > 0) ? W : 1)-1:0] q
);
  localparam int AW = (NF > 1) ? $clog2(NF) : 1;
  if (NT > 0) begin : g_thr
    logic [W-1:0] trom [0:NF-1];
    if (RUNTIME) begin : g_tram
      always_ff @(posedge clk) if (we) trom[waddr[AW-1:0]] <= wdata;
    end else begin : g_trom
      initial $readmemh(FILE, trom);
    end
    always_ff @(posedge clk) if (re) q <= trom[raddr[AW-1:0]];
  end else begin : g_nothr
    assign q = '0;
  end
endmodule

// Matrix-vector-threshold unit: MW inputs, MH outputs, PE rows and SIMD columns per cycle, NF = MH/PE row folds of
// SF = MW/SIMD column folds per input vector; the input vector is read at nf == 0 and kept for the other row folds.
// Weight word tile = nf*SF + sf holds w[nf*PE + pe][sf*SIMD + s] at bits [(pe*SIMD + s)*WB +: WB]. Activation:
// The finished accumulators go through a one-word output stage (the activation reads registers, not the adder
// tree). NT == 0: the accumulator (OB bits); else y = OUT_BIAS + OUT_SCALE * #{t : acc >= T[c][t]}, threshold word nf
// holding T[nf*PE + pe][t] at bits [(pe*NT + t)*TB +: TB]. XNOR == 1: inputs and weights all -1 or +1; 1-bit weights
// (1 for +1), inputs told apart by their sign bit, products by XNOR, the sum as 2 * popcount - SIMD per column fold.
module qp_mvtu #(
  parameter int MW = 1, parameter int MH = 1, parameter int SIMD = 1, parameter int PE = 1,
  parameter int IB = 8, parameter int I_SIGNED = 0, parameter int WB = 8, parameter int W_SIGNED = 1,
  parameter int AB = 16, parameter int OB = 8, parameter int NT = 0, parameter int TB = 8,
  parameter int OUT_SCALE = 1, parameter int OUT_BIAS = 0, parameter int XNOR = 0, parameter int USE_DSP = 0,
  parameter WFILE = "w.mem", parameter TFILE = "t.mem", parameter int RUNTIME = 0, parameter int BS = 0
) (
  input  logic clk, input logic rst,
  input  logic [SIMD*IB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [PE*OB-1:0] out_data, output logic out_valid, input logic out_ready,
  input  logic wmem_we, input logic [31:0] wmem_addr, input logic [PE*SIMD*WB-1:0] wmem_data,
  input  logic tmem_we, input logic [31:0] tmem_addr, input logic [((NT > 0) ? PE*NT*TB : 1)-1:0] tmem_data
);
  localparam int SF = MW / SIMD, NF = MH / PE, TILES = NF * SF;
  localparam int SFW = (SF > 1) ? $clog2(SF) : 1, NFW = (NF > 1) ? $clog2(NF) : 1;
  localparam int TLW = (TILES > 1) ? $clog2(TILES) : 1;
  localparam int PCW = $clog2(SIMD + 1);
  logic [SFW-1:0] sf;
  logic [NFW-1:0] nf, nf_next;
  logic [TLW-1:0] tile, tile_next;
  wire rd = (nf == '0);
  wire wr = (sf == SFW'(SF - 1));
  // output stage: the finished accumulators of one row fold wait here for the activation and the output FIFO
  logic s2_valid;
  wire s2_free = !s2_valid || out_ready;
  wire en = (!rd || in_valid) && (!wr || s2_free);
  assign in_ready = rd && (!wr || s2_free);
  assign out_valid = s2_valid;
  always_ff @(posedge clk) begin
    if (rst) s2_valid <= 1'b0;
    else if (en && wr) s2_valid <= 1'b1;
    else if (out_ready) s2_valid <= 1'b0;
  end
  assign tile_next = (tile == TLW'(TILES - 1)) ? '0 : tile + 1'b1;
  assign nf_next = !wr ? nf : (nf == NFW'(NF - 1)) ? '0 : nf + 1'b1;
  always_ff @(posedge clk) begin
    if (rst) begin
      sf <= '0; nf <= '0; tile <= '0;
    end else if (en) begin
      sf <= wr ? '0 : sf + 1'b1;
      nf <= nf_next;
      tile <= tile_next;
    end
  end

  // the input vector (column folds), kept while the other row folds read it
  logic [SIMD*IB-1:0] x;
  if (NF > 1) begin : g_inbuf
    logic [SIMD*IB-1:0] inbuf [0:SF-1];
    always_ff @(posedge clk) if (en && rd) inbuf[sf] <= in_data;
    assign x = rd ? in_data : inbuf[sf];
  end else begin : g_noinbuf
    assign x = in_data;
  end

  // weight ROM, registered read of the next tile; RUNTIME: a RAM written before streaming, read every cycle (the
  // current tile while stalled, so the word of tile 0 is fresh once loading ends)
  logic [PE*SIMD*WB-1:0] wq;
  if (RUNTIME) begin : g_wram
    (* ram_style = "block" *) logic [PE*SIMD*WB-1:0] wram [0:TILES-1];
    always_ff @(posedge clk) if (wmem_we) wram[wmem_addr[TLW-1:0]] <= wmem_data;
    always_ff @(posedge clk) wq <= wram[rst ? '0 : en ? tile_next : tile];
  end else begin : g_wrom
    (* rom_style = "block" *) logic [PE*SIMD*WB-1:0] wrom [0:TILES-1];
    initial $readmemh(WFILE, wrom);
    always_ff @(posedge clk) if (rst || en) wq <= wrom[rst ? '0 : tile_next];
  end

  // threshold ROM (RUNTIME: RAM), read with the row fold entering the output stage; none for a binary search (BS:
  // its per-lane stage ROMs are all it reads; a PE*NT*TB-bit word, 73,440 bits for CNN 8-bit conv1, kept Yosys'
  // memory_dff busy for over 3 minutes on that layer alone, session 11)
  localparam int TW = (NT > 0 && !BS) ? PE*NT*TB : 1;
  logic [TW-1:0] tq;
  qp_tmem #(.NF(NF), .W(TW), .NT(BS ? 0 : NT), .RUNTIME(RUNTIME), .FILE(TFILE)) u_tmem (
    .clk(clk), .re(en && wr), .raddr(32'(nf)), .we(tmem_we), .waddr(tmem_addr), .wdata(tmem_data[TW-1:0]), .q(tq));
  logic [NFW-1:0] nfq;  // the row fold of the word entering the output stage (binary-search ROMs' address)
  always_ff @(posedge clk) if (en && wr) nfq <= nf;

  logic [PE*AB-1:0] res_all;
  for (genvar p = 0; p < PE; p++) begin : g_pe
    logic signed [AB-1:0] acc_q, sum;
    always_comb begin
      sum = (sf == '0) ? '0 : acc_q;
      if (XNOR) begin
        logic [PCW-1:0] pop;
        pop = '0;
        // agreement of input sign and weight bit as a 1-bit comparison: inside a size cast the operands of a
        // bitwise ~^ would be widened first (ones in the upper bits), right only when 2 * SIMD is a power of two
        for (int s = 0; s < SIMD; s++)
          pop = pop + PCW'(x[s*IB + IB - 1] != wq[p*SIMD + s]);
        sum = sum + AB'(2) * $signed({1'b0, pop}) - AB'(SIMD);
      end else begin
        for (int s = 0; s < SIMD; s++) begin
          logic signed [IB:0] xe;
          logic signed [WB:0] we;
          xe = I_SIGNED ? $signed({x[s*IB + IB - 1], x[s*IB +: IB]}) : $signed({1'b0, x[s*IB +: IB]});
          we = W_SIGNED ? $signed({wq[(p*SIMD + s)*WB + WB - 1], wq[(p*SIMD + s)*WB +: WB]})
                        : $signed({1'b0, wq[(p*SIMD + s)*WB +: WB]});
          sum = sum + xe * we;
        end
      end
    end
    logic signed [AB-1:0] res;
    always_ff @(posedge clk) if (en) acc_q <= sum;
    always_ff @(posedge clk) if (en && wr) res <= sum;
    assign res_all[p*AB +: AB] = res;
    if (NT == 0) begin : g_acc
      assign out_data[p*OB +: OB] = OB'(res);
    end
  end
  if (NT > 0) begin : g_act
    qp_activate #(.PE(PE), .VB(AB), .NT(NT), .TB(TB), .OB(OB), .OUT_SCALE(OUT_SCALE), .OUT_BIAS(OUT_BIAS),
                 .BS(BS), .NF(NF), .TFILE(TFILE)) u_act (.v(res_all), .thr(tq), .nfq(32'(nfq)), .y(out_data));
  end
endmodule

// Sliding-window generator (im2col) with PAD zero (or PADV) pixels per side generated inside: K padded rows are
// prefilled (iterations over their PW*CF word slots, reading only real pixels), then per output row
// max(OW*KH*KW*CF, SH*PW*CF) iterations write the row's window words while prefetching the next SH rows into
// KH + SH row buffers. Window words per output pixel in (ky, kx, channel fold) order, or (channel fold, ky, kx)
// when DEPTHWISE.
module qp_swg #(
  parameter int C = 1, parameter int SIMD = 1, parameter int IH = 1, parameter int IW = 1,
  parameter int KH = 1, parameter int KW = 1, parameter int SH = 1, parameter int SW = 1,
  parameter int PAD = 0, parameter int DEPTHWISE = 0, parameter int EB = 8, parameter int PADV = 0
) (
  input  logic clk, input logic rst,
  input  logic [SIMD*EB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [SIMD*EB-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int CF = C / SIMD, PH = IH + 2 * PAD, PW = IW + 2 * PAD;
  localparam int OH = (PH - KH) / SH + 1, OW = (PW - KW) / SW + 1;
  localparam int R = KH + SH, ROWW = PW * CF;
  localparam int WBN = OW * KH * KW * CF, RBN = SH * ROWW, M = (WBN > RBN) ? WBN : RBN;
  localparam int YMAX = KH + OH * SH + SH;
  localparam int YW = $clog2(YMAX + 1), XW = $clog2(PW + 1), CW = $clog2(CF + 1), RW = $clog2(R + 1);
  localparam int JW = $clog2(M + 1), OHW = $clog2(OH + 1), OWW = $clog2(OW + 1);
  localparam int KHW = $clog2(KH + 1), KWW = $clog2(KW + 1), AW = $clog2(R * ROWW + 1);

  logic [SIMD*EB-1:0] mem [0:R*ROWW-1];
  logic [SIMD*EB-1:0] pad_word;
  for (genvar s = 0; s < SIMD; s++) begin : g_pad
    localparam logic [EB-1:0] PV = EB'(PADV);
    assign pad_word[s*EB +: EB] = PV;
  end

  logic pre;
  // read cursor: padded row y (buffer row yb = y mod R), column x, channel fold c
  logic [YW-1:0] y; logic [RW-1:0] yb; logic [XW-1:0] x; logic [CW-1:0] c;
  // window cursor: output row r (first buffer row rb = r*SH mod R), iteration j, output column ox, ky, kx, fold wc
  logic [OHW-1:0] r; logic [RW-1:0] rb; logic [JW-1:0] j; logic [OWW-1:0] ox;
  logic [KHW-1:0] ky; logic [KWW-1:0] kx; logic [CW-1:0] wc;

  wire slot = pre || (j < JW'(RBN));
  wire in_rows = (y < YW'(PH));
  wire real_px = (y >= YW'(PAD)) && (y < YW'(PAD + IH)) && (x >= XW'(PAD)) && (x < XW'(PAD + IW));
  wire rd = slot && in_rows && real_px;
  wire wr = !pre && (j < JW'(WBN));
  wire en = (!rd || in_valid) && (!wr || out_ready);
  assign in_ready = rd && (!wr || out_ready);
  assign out_valid = wr && (!rd || in_valid);

  logic [RW:0] row_sum;
  logic [RW-1:0] row;
  assign row_sum = {1'b0, rb} + (RW+1)'(ky);
  assign row = (row_sum >= (RW+1)'(R)) ? RW'(row_sum - (RW+1)'(R)) : RW'(row_sum);
  wire [AW-1:0] raddr = AW'(row) * AW'(ROWW) + (AW'(ox) * AW'(SW) + AW'(kx)) * AW'(CF) + AW'(wc);
  wire [AW-1:0] waddr = AW'(yb) * AW'(ROWW) + AW'(x) * AW'(CF) + AW'(c);
  assign out_data = mem[raddr];
  always_ff @(posedge clk) if (en && slot && in_rows) mem[waddr] <= real_px ? in_data : pad_word;

  wire last_slot_of_row = (x == XW'(PW - 1)) && (c == CW'(CF - 1));
  wire last_pre = pre && (y == YW'(KH - 1)) && last_slot_of_row;
  wire last_j = !pre && (j == JW'(M - 1));
  wire last_frame = last_j && (r == OHW'(OH - 1));
  always_ff @(posedge clk) begin
    if (rst) begin
      pre <= 1'b1; y <= '0; yb <= '0; x <= '0; c <= '0;
      r <= '0; rb <= '0; j <= '0; ox <= '0; ky <= '0; kx <= '0; wc <= '0;
    end else if (en) begin
      if (slot) begin  // advance the read cursor
        if (c == CW'(CF - 1)) begin
          c <= '0;
          if (x == XW'(PW - 1)) begin
            x <= '0; y <= y + 1'b1; yb <= (yb == RW'(R - 1)) ? '0 : yb + 1'b1;
          end else x <= x + 1'b1;
        end else c <= c + 1'b1;
      end
      if (wr) begin  // advance the window cursor
        if (DEPTHWISE) begin
          if (kx == KWW'(KW - 1)) begin
            kx <= '0;
            if (ky == KHW'(KH - 1)) begin
              ky <= '0;
              if (wc == CW'(CF - 1)) begin wc <= '0; ox <= ox + 1'b1; end else wc <= wc + 1'b1;
            end else ky <= ky + 1'b1;
          end else kx <= kx + 1'b1;
        end else begin
          if (wc == CW'(CF - 1)) begin
            wc <= '0;
            if (kx == KWW'(KW - 1)) begin
              kx <= '0;
              if (ky == KHW'(KH - 1)) begin ky <= '0; ox <= ox + 1'b1; end else ky <= ky + 1'b1;
            end else kx <= kx + 1'b1;
          end else wc <= wc + 1'b1;
        end
      end
      if (last_pre) begin
        pre <= 1'b0; j <= '0;
      end else if (!pre) begin
        j <= last_j ? '0 : j + 1'b1;
        if (last_j) begin
          ox <= '0; ky <= '0; kx <= '0; wc <= '0;
          r <= r + 1'b1;
          rb <= (RW+1)'(rb) + (RW+1)'(SH) >= (RW+1)'(R) ? RW'((RW+1)'(rb) + (RW+1)'(SH) - (RW+1)'(R))
                                                        : RW'((RW+1)'(rb) + (RW+1)'(SH));
        end
        if (last_frame) begin
          pre <= 1'b1; r <= '0; rb <= '0; y <= '0; yb <= '0; x <= '0; c <= '0;
        end
      end
    end
  end
endmodule

// Non-overlapping max pool (stride == kernel, floor mode), PE channels per word: one iteration per input word,
// then OW*CF output iterations after every KH-th input row (finn-hlslib StreamingMaxPool).
module qp_maxpool #(
  parameter int C = 1, parameter int PE = 1, parameter int IH = 2, parameter int IW = 2,
  parameter int KH = 2, parameter int KW = 2, parameter int EB = 8, parameter int SIGNED = 0
) (
  input  logic clk, input logic rst,
  input  logic [PE*EB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [PE*EB-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int CF = C / PE, OH = IH / KH, OW = IW / KW;
  localparam int YW = $clog2(IH + 1), XW = $clog2(IW + 1), CW = $clog2(CF + 1), KHW = $clog2(KH + 1);
  localparam int KWW = $clog2(KW + 1), OWW = $clog2(IW / KW + 2), JW = $clog2(OW * CF + 1), AW = $clog2(OW * CF + 1);
  logic [PE*EB-1:0] mem [0:OW*CF-1];
  logic wphase;
  logic [YW-1:0] y; logic [XW-1:0] x; logic [CW-1:0] c; logic [KHW-1:0] ky; logic [KWW-1:0] kx;
  logic [OWW-1:0] ox; logic [JW-1:0] j;
  wire rd = !wphase, wr = wphase;
  wire en = (!rd || in_valid) && (!wr || out_ready);
  assign in_ready = rd && (!wr || out_ready);
  assign out_valid = wr && (!rd || in_valid);
  wire keep = (y < YW'(OH * KH)) && (x < XW'(OW * KW));
  wire [AW-1:0] idx = AW'(ox) * AW'(CF) + AW'(c);
  wire [PE*EB-1:0] cur = mem[idx];
  logic [PE*EB-1:0] mx;
  for (genvar p = 0; p < PE; p++) begin : g_pe
    wire signed [EB:0] a = SIGNED ? $signed({cur[p*EB + EB - 1], cur[p*EB +: EB]}) : $signed({1'b0, cur[p*EB +: EB]});
    wire signed [EB:0] b = SIGNED ? $signed({in_data[p*EB + EB - 1], in_data[p*EB +: EB]})
                                  : $signed({1'b0, in_data[p*EB +: EB]});
    assign mx[p*EB +: EB] = (ky == '0 && kx == '0) || (b > a) ? in_data[p*EB +: EB] : cur[p*EB +: EB];
  end
  assign out_data = mem[AW'(j)];
  always_ff @(posedge clk) if (en && rd && keep) mem[idx] <= mx;
  wire row_end = (x == XW'(IW - 1)) && (c == CW'(CF - 1));
  always_ff @(posedge clk) begin
    if (rst) begin
      wphase <= 1'b0; y <= '0; x <= '0; c <= '0; ky <= '0; kx <= '0; ox <= '0; j <= '0;
    end else if (en) begin
      if (wr) begin
        j <= (j == JW'(OW * CF - 1)) ? '0 : j + 1'b1;
        if (j == JW'(OW * CF - 1)) wphase <= 1'b0;
      end else if (c != CW'(CF - 1)) begin
        c <= c + 1'b1;
      end else begin
        c <= '0;
        if (kx == KWW'(KW - 1)) begin kx <= '0; ox <= ox + 1'b1; end else kx <= kx + 1'b1;
        x <= x + 1'b1;
        if (row_end) begin
          x <= '0; kx <= '0; ox <= '0;
          ky <= (ky == KHW'(KH - 1)) ? '0 : ky + 1'b1;
          y <= (y == YW'(IH - 1)) ? '0 : y + 1'b1;
          if (ky == KHW'(KH - 1) && y < YW'(OH * KH)) begin wphase <= 1'b1; j <= '0; end
        end
      end
    end
  end
endmodule

// Vector-vector unit (depthwise convolution, MAXMODE = 0) or window maximum (MAXMODE = 1) over K window positions
// of C channels, PE channels per word, input words in (channel fold, k) order from a DEPTHWISE sliding window:
// NPIX * NF * K iterations, each reading one word, writing after k == K-1. Weight word nf*K + k holds
// w[nf*PE + pe][k] at bits [pe*WB +: WB]; thresholds as in qp_mvtu (word nf).
module qp_vvau #(
  parameter int C = 1, parameter int PE = 1, parameter int K = 1, parameter int IB = 8, parameter int I_SIGNED = 0,
  parameter int WB = 8, parameter int W_SIGNED = 1, parameter int AB = 16, parameter int OB = 8,
  parameter int NT = 0, parameter int TB = 8, parameter int OUT_SCALE = 1, parameter int OUT_BIAS = 0,
  parameter int MAXMODE = 0, parameter WFILE = "w.mem", parameter TFILE = "t.mem", parameter int RUNTIME = 0,
  parameter int BS = 0
) (
  input  logic clk, input logic rst,
  input  logic [PE*IB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [PE*OB-1:0] out_data, output logic out_valid, input logic out_ready,
  input  logic wmem_we, input logic [31:0] wmem_addr, input logic [PE*WB-1:0] wmem_data,
  input  logic tmem_we, input logic [31:0] tmem_addr, input logic [((NT > 0) ? PE*NT*TB : 1)-1:0] tmem_data
);
  localparam int NF = C / PE, NFW = (NF > 1) ? $clog2(NF) : 1, KW_ = (K > 1) ? $clog2(K) : 1;
  localparam int TILES = NF * K, TLW = (TILES > 1) ? $clog2(TILES) : 1;
  logic [KW_-1:0] k;
  logic [NFW-1:0] nf;
  logic [TLW-1:0] tile, tile_next;
  wire wr = (k == KW_'(K - 1));
  logic s2_valid;
  wire s2_free = !s2_valid || out_ready;
  wire en = in_valid && (!wr || s2_free);
  assign in_ready = !wr || s2_free;
  assign out_valid = s2_valid;
  assign tile_next = (tile == TLW'(TILES - 1)) ? '0 : tile + 1'b1;
  always_ff @(posedge clk) begin
    if (rst) begin
      k <= '0; nf <= '0; tile <= '0; s2_valid <= 1'b0;
    end else begin
      if (en) begin
        k <= wr ? '0 : k + 1'b1;
        if (wr) nf <= (nf == NFW'(NF - 1)) ? '0 : nf + 1'b1;
        tile <= tile_next;
      end
      if (en && wr) s2_valid <= 1'b1;
      else if (out_ready) s2_valid <= 1'b0;
    end
  end
  logic [PE*WB-1:0] wq;
  if (!MAXMODE && RUNTIME) begin : g_wram
    logic [PE*WB-1:0] wram [0:TILES-1];
    always_ff @(posedge clk) if (wmem_we) wram[wmem_addr[TLW-1:0]] <= wmem_data;
    always_ff @(posedge clk) wq <= wram[rst ? '0 : en ? tile_next : tile];
  end else if (!MAXMODE) begin : g_w
    logic [PE*WB-1:0] wrom [0:TILES-1];
    initial $readmemh(WFILE, wrom);
    always_ff @(posedge clk) if (rst || en) wq <= wrom[rst ? '0 : tile_next];
  end else begin : g_now
    assign wq = '0;
  end
  localparam int TW = (NT > 0 && !BS) ? PE*NT*TB : 1;  // (none for a binary search, as in qp_mvtu)
  logic [TW-1:0] tq;
  qp_tmem #(.NF(NF), .W(TW), .NT(BS ? 0 : NT), .RUNTIME(RUNTIME), .FILE(TFILE)) u_tmem (
    .clk(clk), .re(en && wr), .raddr(32'(nf)), .we(tmem_we), .waddr(tmem_addr), .wdata(tmem_data[TW-1:0]), .q(tq));
  logic [NFW-1:0] nfq;  // the row fold of the word entering the output stage (binary-search ROMs' address)
  always_ff @(posedge clk) if (en && wr) nfq <= nf;
  logic [PE*AB-1:0] res_all;
  for (genvar p = 0; p < PE; p++) begin : g_pe
    logic signed [AB-1:0] acc_q, sum, res;
    wire signed [IB:0] xe = I_SIGNED ? $signed({in_data[p*IB + IB - 1], in_data[p*IB +: IB]})
                                     : $signed({1'b0, in_data[p*IB +: IB]});
    wire signed [WB:0] we = W_SIGNED ? $signed({wq[p*WB + WB - 1], wq[p*WB +: WB]}) : $signed({1'b0, wq[p*WB +: WB]});
    always_comb begin
      // two statements: a '0 in the same expression would make it unsigned (products zero-extended)
      sum = (k == '0) ? '0 : acc_q;
      if (MAXMODE) sum = (k == '0 || xe > acc_q) ? AB'(xe) : acc_q;
      else sum = sum + xe * we;
    end
    always_ff @(posedge clk) if (en) acc_q <= sum;
    always_ff @(posedge clk) if (en && wr) res <= sum;
    assign res_all[p*AB +: AB] = res;
    if (NT == 0) begin : g_acc
      assign out_data[p*OB +: OB] = OB'(res);
    end
  end
  if (NT > 0) begin : g_act
    qp_activate #(.PE(PE), .VB(AB), .NT(NT), .TB(TB), .OB(OB), .OUT_SCALE(OUT_SCALE), .OUT_BIAS(OUT_BIAS),
                 .BS(BS), .NF(NF), .TFILE(TFILE)) u_act (.v(res_all), .thr(tq), .nfq(32'(nfq)), .y(out_data));
  end
endmodule
