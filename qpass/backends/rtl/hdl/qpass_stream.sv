// qpass RTL layer library: stream plumbing (written for qpass, Apache-2.0).
//
// Every stream is valid/ready (AXI-Stream TVALID/TREADY) carrying words of N packed elements of EB bits (element i
// in bits [i*EB +: EB], two's complement when signed). Layers write into FIFOs only, so a layer's out_valid may
// depend on out_ready (a FIFO's in_ready depends on its own state only) and no combinational loop can form.
// Synchronous active-high reset inside; the top converts the AXI active-low ap_rst_n.

// FIFO of D words (D >= 1); out_data is the head word. Simulation keeps the highest occupancy seen (maxocc).
module qp_fifo #(parameter int W = 8, parameter int D = 2) (
  input  logic clk, input logic rst,
  input  logic [W-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [W-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int AW = (D > 1) ? $clog2(D) : 1;
  logic [W-1:0] mem [0:D-1];
  logic [AW-1:0] wptr, rptr;
  logic [AW:0] count;
  wire wr = in_valid && in_ready;
  wire rd = out_valid && out_ready;
  assign in_ready = (count != D[AW:0]);
  assign out_valid = (count != 0);
  assign out_data = mem[rptr];
  always_ff @(posedge clk) begin
    if (wr) mem[wptr] <= in_data;
  end
  always_ff @(posedge clk) begin
    if (rst) begin
      wptr <= '0; rptr <= '0; count <= '0;
    end else begin
      if (wr) wptr <= (wptr == AW'(D - 1)) ? '0 : wptr + 1'b1;
      if (rd) rptr <= (rptr == AW'(D - 1)) ? '0 : rptr + 1'b1;
      count <= count + {{AW{1'b0}}, wr} - {{AW{1'b0}}, rd};
    end
  end
`ifndef SYNTHESIS
  logic [AW:0] maxocc;
  always_ff @(posedge clk) begin
    if (rst) maxocc <= '0;
    else if (count > maxocc) maxocc <= count;
  end
`endif
endmodule

// one stream read by N consumers (each word goes to all of them together)
module qp_fork #(parameter int W = 8, parameter int N = 2) (
  input  logic [W-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [N*W-1:0] out_data, output logic [N-1:0] out_valid, input logic [N-1:0] out_ready
);
  assign in_ready = &out_ready;
  for (genvar i = 0; i < N; i++) begin : g
    assign out_data[i*W +: W] = in_data;
    assign out_valid[i] = in_valid && in_ready;
  end
endmodule

// data-width converter: IN-element words -> OUT = K * IN element words (element order kept)
module qp_dwc_up #(parameter int IN = 1, parameter int OUT = 2, parameter int EB = 8) (
  input  logic clk, input logic rst,
  input  logic [IN*EB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [OUT*EB-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int K = OUT / IN;
  localparam int KW = (K > 1) ? $clog2(K) : 1;
  logic [KW-1:0] k;
  logic [OUT*EB-1:0] buf_q;
  assign in_ready = !out_valid || out_ready;
  assign out_data = buf_q;
  always_ff @(posedge clk) begin
    if (rst) begin
      k <= '0; out_valid <= 1'b0;
    end else begin
      if (out_valid && out_ready) out_valid <= 1'b0;
      if (in_valid && in_ready) begin
        buf_q[k*IN*EB +: IN*EB] <= in_data;
        if (k == KW'(K - 1)) begin
          k <= '0; out_valid <= 1'b1;
        end else k <= k + 1'b1;
      end
    end
  end
endmodule

// data-width converter: IN = K * OUT element words -> K words of OUT elements
module qp_dwc_down #(parameter int IN = 2, parameter int OUT = 1, parameter int EB = 8) (
  input  logic clk, input logic rst,
  input  logic [IN*EB-1:0] in_data, input logic in_valid, output logic in_ready,
  output logic [OUT*EB-1:0] out_data, output logic out_valid, input logic out_ready
);
  localparam int K = IN / OUT;
  localparam int KW = (K > 1) ? $clog2(K) : 1;
  logic [KW-1:0] k;
  logic [IN*EB-1:0] buf_q;
  logic full;
  wire last = (k == KW'(K - 1));
  assign out_valid = full;
  assign out_data = buf_q[k*OUT*EB +: OUT*EB];
  assign in_ready = !full || (last && out_ready);
  always_ff @(posedge clk) begin
    if (rst) begin
      k <= '0; full <= 1'b0;
    end else begin
      if (full && out_ready) begin
        k <= last ? '0 : k + 1'b1;
        if (last) full <= 1'b0;
      end
      if (in_valid && in_ready) begin
        buf_q <= in_data; full <= 1'b1;
      end
    end
  end
endmodule

// the AXI-Stream side of a partition output: TLAST on the last word of every frame of WORDS words
module qp_tlast #(parameter int WORDS = 1) (
  input logic clk, input logic rst, input logic fire, output logic last
);
  localparam int CW = (WORDS > 1) ? $clog2(WORDS) : 1;
  logic [CW-1:0] c;
  assign last = (c == CW'(WORDS - 1));
  always_ff @(posedge clk) begin
    if (rst) c <= '0;
    else if (fire) c <= last ? '0 : c + 1'b1;
  end
endmodule
