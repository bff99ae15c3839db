// qpass streaming dataflow layer library (HLS C++), written for qpass (Apache-2.0).
//
// Every layer is one function over hls::stream<ap_uint<N * EB>> words holding N packed elements of EB bits
// (element i in bits [i*EB, (i+1)*EB), two's complement for signed element types, one bit for bipolar ones), one
// II=1 pipelined loop over reps frames in the style of finn-hlslib: the matrix-vector-threshold unit (MVTU) is one flattened loop of
// NUMV * NF * SF iterations with an input buffer filled at nf == 0 and reused for the other row folds, PE
// accumulators, and a threshold activation that counts thresholds with acc >= T (MultiThreshold semantics).
// Streams carry reps frames per call (1 unless the top is a frame loop), pixels in (row, column, channel) order.
#ifndef QPASS_DATAFLOW_H
#define QPASS_DATAFLOW_H

#include <ap_int.h>
#include <hls_stream.h>

namespace qpass {

template <unsigned N>
struct clog2 {
  enum { value = (N <= 1) ? 0 : 1 + clog2<(N + 1) / 2>::value };
};
template <>
struct clog2<1> {
  enum { value = 0 };
};
template <>
struct clog2<0> {
  enum { value = 0 };
};

// a +-1 element stored as one bit (1 = +1, 0 = -1): binary (bipolar) weights and activations. Its value is an
// int (-1 or +1); built from a value, any v > 0 is +1 (so a threshold unit's -1/+1 output and a -1 pad map exactly)
struct bipolar {
  enum { width = 1 };
  ap_uint<1> b;
  bipolar() : b(0) {}
  bipolar(int v) : b(v > 0 ? 1 : 0) {}
  template <int W>
  bipolar(const ap_int<W>& v) : b(v > 0 ? 1 : 0) {}
  template <int W>
  bipolar(const ap_uint<W>& v) : b(v > 0 ? 1 : 0) {}
  operator int() const { return b ? 1 : -1; }
};

// the EB = T::width bits of an element <-> the element (ap types: the same bits; bipolar: its one bit)
template <typename T>
struct codec {
  template <int W>
  static T decode(const ap_uint<W>& bits) {
#pragma HLS INLINE
    T v = bits;  // same bits (ap_int of equal width reinterprets)
    return v;
  }
  static ap_uint<T::width> encode(const T& v) {
#pragma HLS INLINE
    ap_uint<T::width> bits = v;
    return bits;
  }
};
template <>
struct codec<bipolar> {
  template <int W>
  static bipolar decode(const ap_uint<W>& bits) {
#pragma HLS INLINE
    bipolar v;
    v.b = bits[0];
    return v;
  }
  static ap_uint<1> encode(const bipolar& v) {
#pragma HLS INLINE
    return v.b;
  }
};

// element i of a packed word, as T (T::width bits; ap_int, ap_uint or bipolar)
template <typename T, int W>
inline T get(const ap_uint<W>& word, unsigned i) {
#pragma HLS INLINE
  ap_uint<T::width> bits = word.range((i + 1) * T::width - 1, i * T::width);
  return codec<T>::decode(bits);
}

template <typename T, int W>
inline void put(ap_uint<W>& word, unsigned i, const T& v) {
#pragma HLS INLINE
  word.range((i + 1) * T::width - 1, i * T::width) = codec<T>::encode(v);
}

// one product of a MAC, at its exact width: w * x on LUTs (DSP false: BIND_OP impl=fabric) or on a DSP slice
template <typename TA, bool DSP, typename TW, typename TI>
inline ap_int<TW::width + TI::width + 1> mul(const TW& w, const TI& x) {
#pragma HLS INLINE
  typedef ap_int<TW::width + TI::width + 1> TP;
  if (DSP) {
    const TP p = w * x;
#pragma HLS BIND_OP variable=p op=mul impl=dsp
    return p;
  } else {
    const TP p = w * x;
#pragma HLS BIND_OP variable=p op=mul impl=fabric
    return p;
  }
}
// any weight times a +-1 input: a conditional negation, no multiplier
template <typename TA, bool DSP, typename TW>
inline TA mul(const TW& w, const bipolar& x) {
#pragma HLS INLINE
  const TA v = w;
  return x.b ? TA(v) : TA(-v);
}
// a +-1 weight times any input: a conditional negation, no multiplier (the 8-bit first layer of a BNN)
template <typename TA, bool DSP, typename TI>
inline TA mul(const bipolar& w, const TI& x) {
#pragma HLS INLINE
  const TA v = x;
  return w.b ? TA(v) : TA(-v);
}
// XNOR-popcount: a +-1 weight times a +-1 input is +1 exactly when their bits agree; the MAC counts agreements
// (the popcount; the emitter turns thresholds on the dot product d into thresholds on (d + MW) / 2)
template <typename TA, bool DSP>
inline TA mul(const bipolar& w, const bipolar& x) {
#pragma HLS INLINE
  const ap_uint<1> agree = ~(w.b ^ x.b);
  return TA(agree);
}

// AXI-Stream output beats with TLAST: Vitis' ap_axiu (ap_axi_sdata.h) in synthesis and Vitis' own C simulation;
// a struct with the same fields in qpass' g++ C simulation (csim/hls_stream.h defines QPASS_CSIM_STREAM)
#ifdef QPASS_CSIM_STREAM
template <int W>
struct axis_word {
  ap_uint<W> data;
  ap_uint<(W + 7) / 8> keep;
  ap_uint<(W + 7) / 8> strb;
  ap_uint<1> last;
};
template <int W>
using axis_t = axis_word<W>;
#else
}  // namespace qpass
#include <ap_axi_sdata.h>
namespace qpass {
template <int W>
using axis_t = ap_axiu<W, 0, 0, 0>;
#endif

// the data of a beat (a plain word is its own data); last_ok: TLAST set exactly on the frame's last beat
template <int W>
inline ap_uint<W> beat_data(const ap_uint<W>& w) { return w; }
template <int W>
inline ap_uint<W> beat_data(const axis_t<W>& b) { return b.data; }
template <int W>
inline bool last_ok(const ap_uint<W>&, bool) { return true; }
template <int W>
inline bool last_ok(const axis_t<W>& b, bool is_last) { return bool(b.last) == is_last; }

// NWORDS words per frame -> AXI-Stream beats, TLAST on the last word of every frame
template <unsigned W, unsigned NWORDS>
void axis_out(hls::stream<ap_uint<W> >& in, hls::stream<axis_t<W> >& out, const unsigned reps) {
  unsigned w = 0;
  for (unsigned i = 0; i < reps * NWORDS; i++) {
#pragma HLS PIPELINE II=1
    axis_t<W> b;
    b.data = in.read();
    b.keep = -1;
    b.strb = -1;
    b.last = (w == NWORDS - 1) ? 1 : 0;
    out.write(b);
    if (++w == NWORDS) w = 0;
  }
}

// A read-only table of ROWS x COLS words of N elements of EB bits, stored in NL limbs of a plain unsigned type L
// holding EPL = floor(bits(L) / EB) elements each (element i in limb i / EPL at bit (i % EPL) * EB), so that:
// the table is a constant-initialised C array (g++ compiles it instantly; an array of ap_uint objects needs a
// run-time constructor per word), no element straddles two limbs (unpacking is a constant shift and mask per
// element), and the memory is N * EB bits wide up to the limb padding.
template <unsigned ROWS, unsigned COLS, unsigned N, unsigned EB, typename L, unsigned EPL, unsigned NL>
struct PackedRom {
  L m[ROWS][COLS][NL];
  template <typename T>
  T elem(unsigned r, unsigned c, unsigned i) const {
#pragma HLS INLINE
    const L limb = m[r][c][i / EPL];
    const L mask = (EB >= 8 * sizeof(L)) ? L(~L(0)) : L((L(1) << (EB % (8 * sizeof(L)))) - 1);
    const ap_uint<EB> bits = L(limb >> ((i % EPL) * EB)) & mask;
    return codec<T>::decode(bits);
  }
};

// ------------------------------------------------------------------------------------------- activations

// raw accumulator out (MVTU without activation): the output type holds the exact accumulator range
template <typename TO>
struct PassThroughActivation {
  template <typename TA>
  TO activate(unsigned, unsigned, const TA& acc) const {
#pragma HLS INLINE
    return TO(acc);
  }
};

// raw dot product out of an XNOR-popcount MVTU: d = 2 * popcount - MW
template <typename TO, int MW>
struct XnorDotActivation {
  template <typename TA>
  TO activate(unsigned, unsigned, const TA& pop) const {
#pragma HLS INLINE
    const ap_int<TA::width + 2> d = 2 * pop - MW;
    return TO(d);
  }
};

// y = BIAS + SCALE * #{t : acc >= T[c][t]}, channel c = nf * PE + pe (rows interleaved across PEs); TT is a
// plain C integer type wide enough for every threshold (constant-initialised table)
template <unsigned NF, unsigned PE, unsigned NT, typename TT, typename TO, int SCALE, int BIAS>
struct ThresholdActivation {
  TT m[PE][NF][NT];
  template <typename TA>
  TO activate(unsigned nf, unsigned pe, const TA& acc) const {
#pragma HLS INLINE
    const ap_int<TA::width + 1> a = acc;  // signed view: compares by value against signed thresholds
    ap_uint<clog2<NT + 1>::value + 1> cnt = 0;
    for (unsigned t = 0; t < NT; t++) {
#pragma HLS UNROLL
      cnt += (a >= m[pe][nf][t]) ? 1 : 0;
    }
    return TO(BIAS + SCALE * int(cnt));
  }
};

// ------------------------------------------------------------------------------------------- memories

// the storage of an internal RAM, chosen by overload on storage<IMPL> (the pragma lands on the caller's array
// once inlined): simple dual-port (one read, one write port); IMPL 0 lets the tool choose, 1 block RAM,
// 2 LUTRAM, 3 UltraRAM
template <unsigned IMPL>
struct storage {};
template <typename B>
inline void bind_ram_s2p(B& buf, storage<0>) {
#pragma HLS INLINE
#pragma HLS BIND_STORAGE variable=buf type=ram_s2p
}
template <typename B>
inline void bind_ram_s2p(B& buf, storage<1>) {
#pragma HLS INLINE
#pragma HLS BIND_STORAGE variable=buf type=ram_s2p impl=bram
}
template <typename B>
inline void bind_ram_s2p(B& buf, storage<2>) {
#pragma HLS INLINE
#pragma HLS BIND_STORAGE variable=buf type=ram_s2p impl=lutram
}
template <typename B>
inline void bind_ram_s2p(B& buf, storage<3>) {
#pragma HLS INLINE
#pragma HLS BIND_STORAGE variable=buf type=ram_s2p impl=uram
}

// --------------------------------------------------------------------------------- matrix-vector unit

// one output word: the activation of each of the PE accumulators of row fold nf
template <unsigned PE, typename TO, typename TA, typename Act>
inline void write_activated(hls::stream<ap_uint<PE * TO::width> >& out, const Act& act, unsigned nf,
                            const TA acc[PE]) {
#pragma HLS INLINE
  ap_uint<PE * TO::width> o = 0;
  for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
    put<TO>(o, pe, act.activate(nf, pe, acc[pe]));
  }
  out.write(o);
}

// MW inputs, MH outputs, applied to NUMV vectors per frame, reps frames; weights.elem<TW>(pe, nf * SF + sf, s) is
// the weight of row nf * PE + pe, column sf * SIMD + s (finn-hlslib layout: rows interleaved across PEs). The
// input vector is read while nf == 0 and reused for the other NF - 1 row
// folds. DSP: the products on DSP slices (res_type dsp), else on LUTs; a bipolar TW and TI make the MAC an
// XNOR-popcount (see mul). The input vector's SF words stay in registers (finn-hlslib's input buffer).
template <unsigned MW, unsigned MH, unsigned SIMD, unsigned PE, unsigned NUMV, typename TI, typename TW,
          typename TA, typename TO, bool DSP, typename Wgt, typename Act>
void mvtu(hls::stream<ap_uint<SIMD * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
          const Wgt& weights, const Act& act, const unsigned reps) {
  const unsigned SF = MW / SIMD;
  const unsigned NF = MH / PE;
  TI inbuf[SF][SIMD];
#pragma HLS ARRAY_PARTITION variable=inbuf complete dim=0
  TA acc[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
  unsigned nf = 0, sf = 0, tile = 0;
  for (unsigned i = 0; i < reps * NUMV * NF * SF; i++) {
#pragma HLS PIPELINE II=1
    if (nf == 0) {
      const ap_uint<SIMD * TI::width> x = in.read();
      for (unsigned s = 0; s < SIMD; s++) {
#pragma HLS UNROLL
        inbuf[sf][s] = get<TI>(x, s);
      }
    }
    for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
      TA sum = (sf == 0) ? TA(0) : acc[pe];
      for (unsigned s = 0; s < SIMD; s++) {
#pragma HLS UNROLL
        sum += mul<TA, DSP>(weights.template elem<TW>(pe, tile, s), inbuf[sf][s]);
      }
      acc[pe] = sum;
    }
    tile++;
    if (++sf == SF) {
      write_activated<PE, TO>(out, act, nf, acc);
      sf = 0;
      if (++nf == NF) {
        nf = 0;
        tile = 0;
      }
    }
  }
}

// ----------------------------------------------------------------------------- sliding-window generator

// im2col over a (IH, IW, C) frame with PT/PL/PB/PR pad pixels of value PAD (0 for a convolution, the lowest
// value for a max pool). Per output pixel the window words come in (ky, kx, channel fold) order, or
// (channel fold, ky, kx) when DEPTHWISE (for the vector-vector unit and window reductions, which accumulate one
// channel fold at a time).
// The line buffer holds R = KH + SH padded rows, one memory bank per row (partitioned on the row index): while
// the windows of output row r are read from rows r*SH .. r*SH+KH-1 (mod R), the next SH rows are written into
// the other SH banks, so a read and a write never touch the same bank in one iteration and the write -> read
// distance of any address is at least one output row (DEPENDENCE inter/intra false hold). Each bank is a simple
// dual-port RAM, one read and one write port (ram_s2p; IMPL: 0 auto, 1 block RAM, 2 LUTRAM, 3 UltraRAM, the
// layer's ram_style). Every address comes from counters that step and wrap: no division or modulo at run time.
// the writing side of a line buffer of R banks of ROWW words: padded row y in bank `bank`, word slot = (pixel x,
// channel fold cf), all stepped by counters; real(): the slot holds an input pixel, not padding
template <unsigned CF, unsigned ROWW, unsigned R, unsigned PT, unsigned PL, unsigned IH, unsigned IW>
struct LineWriter {
  unsigned y, bank, slot, x, cf;
  LineWriter() : y(0), bank(0), slot(0), x(0), cf(0) {}
  bool real() const {
#pragma HLS INLINE
    return y >= PT && y < PT + IH && x >= PL && x < PL + IW;
  }
  void step() {
#pragma HLS INLINE
    slot++;
    if (++cf == CF) {
      cf = 0;
      x++;
    }
    if (slot == ROWW) {
      slot = 0;
      x = 0;
      y++;
      bank = (bank + 1 == R) ? 0 : bank + 1;
    }
  }
};

// the reading side: window position (ky, kx) of the current output pixel, its bank (top bank + ky, mod R) and
// column offset kx * CF; step(top) moves to the next position (kx fastest) and is true when the window wraps
template <unsigned KH, unsigned KW, unsigned CF, unsigned R>
struct WindowCursor {
  unsigned ky, kx, col, bank;
  WindowCursor() : ky(0), kx(0), col(0), bank(0) {}
  bool step(unsigned top) {
#pragma HLS INLINE
    col += CF;
    if (++kx < KW) return false;
    kx = 0;
    col = 0;
    bank = (bank + 1 == R) ? 0 : bank + 1;
    if (++ky < KH) return false;
    ky = 0;
    bank = top;
    return true;
  }
};

template <unsigned C, unsigned SIMD, unsigned IH, unsigned IW, unsigned KH, unsigned KW, unsigned SH, unsigned SW,
          unsigned PT, unsigned PL, unsigned PB, unsigned PR, bool DEPTHWISE, typename T, int PAD, unsigned IMPL>
void sliding_window(hls::stream<ap_uint<SIMD * T::width> >& in, hls::stream<ap_uint<SIMD * T::width> >& out,
                    const unsigned reps) {
  const unsigned EB = T::width;
  const unsigned CF = C / SIMD;
  const unsigned PH = IH + PT + PB, PW = IW + PL + PR;
  const unsigned OH = (PH - KH) / SH + 1, OW = (PW - KW) / SW + 1;
  const unsigned R = KH + SH;
  const unsigned ROWW = PW * CF;
  const unsigned WIN = KH * KW * CF;
  const unsigned WB = OW * WIN, RB = SH * ROWW;
  const unsigned M = WB > RB ? WB : RB;
  ap_uint<SIMD * EB> pad_word = 0;
  for (unsigned s = 0; s < SIMD; s++) {
#pragma HLS UNROLL
    put<T>(pad_word, s, T(PAD));
  }
  ap_uint<SIMD * EB> buf[R][ROWW];
#pragma HLS ARRAY_PARTITION variable=buf complete dim=1
#pragma HLS DEPENDENCE variable=buf inter false
#pragma HLS DEPENDENCE variable=buf intra false
  bind_ram_s2p(buf, storage<IMPL>());
  for (unsigned rep = 0; rep < reps; rep++) {
    LineWriter<CF, ROWW, R, PT, PL, IH, IW> w;
    for (unsigned j = 0; j < KH * ROWW; j++) {  // prefill KH padded rows
#pragma HLS PIPELINE II=1
      buf[w.bank][w.slot] = w.real() ? in.read() : pad_word;
      w.step();
    }
    // reader: output row r (its top bank rbase), output pixel ox (column ocol = ox * SW * CF), window position k
    // and channel fold cf
    unsigned j = 0, rbase = 0, ocol = 0, cf = 0;
    WindowCursor<KH, KW, CF, R> k;
    for (unsigned i = 0; i < OH * M; i++) {  // per output row: its windows, while prefetching the next SH rows
#pragma HLS PIPELINE II=1
      if (j < WB) {
        out.write(buf[k.bank][ocol + k.col + cf]);
        bool next_pixel = false;
        if (DEPTHWISE) {  // (cf, ky, kx)
          if (k.step(rbase) && ++cf == CF) {
            cf = 0;
            next_pixel = true;
          }
        } else if (++cf == CF) {  // (ky, kx, cf)
          cf = 0;
          next_pixel = k.step(rbase);
        }
        if (next_pixel) ocol += SW * CF;
      }
      if (j < RB && w.y < PH) {
        buf[w.bank][w.slot] = w.real() ? in.read() : pad_word;
#pragma HLS DEPENDENCE variable=buf inter false
      }
      if (j < RB) w.step();
      if (++j == M) {  // next output row
        j = 0;
        ocol = 0;
        rbase = (rbase + SH >= R) ? rbase + SH - R : rbase + SH;
        k.bank = rbase;
      }
    }
  }
}

// --------------------------------------------------------------------- vector-vector unit (depthwise)

// depthwise convolution over K = KH*KW window positions, PE channels per word, input words in
// (channel fold, k) order from a DEPTHWISE sliding window; weights.elem<TW>(nf, k, pe) is the weight of
// channel nf * PE + pe at window position k.
template <unsigned C, unsigned PE, unsigned K, unsigned NUMV, typename TI, typename TW, typename TA, typename TO,
          bool DSP, typename Wgt, typename Act>
void vvau(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
          const Wgt& weights, const Act& act, const unsigned reps) {
  const unsigned NF = C / PE;
  TA acc[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
  unsigned nf = 0, k = 0;
  for (unsigned i = 0; i < reps * NUMV * NF * K; i++) {
#pragma HLS PIPELINE II=1
    const ap_uint<PE * TI::width> x = in.read();
    for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
      const TA prev = (k == 0) ? TA(0) : acc[pe];
      acc[pe] = prev + mul<TA, DSP>(weights.template elem<TW>(nf, k, pe), get<TI>(x, pe));
    }
    if (++k == K) {
      write_activated<PE, TO>(out, act, nf, acc);
      k = 0;
      if (++nf == NF) nf = 0;
    }
  }
}

// window maximum or sum over K positions (DEPTHWISE window order), PE channels per word: the K words of one
// window arrive back to back, so the running value lives in registers (a carried chain of one cycle)
template <unsigned C, unsigned PE, unsigned K, unsigned NUMV, bool MAX, typename TI, typename TO>
void window_reduce(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
                   const unsigned reps) {
  const unsigned NF = C / PE;
  TO acc[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
  unsigned k = 0;
  for (unsigned i = 0; i < reps * NUMV * NF * K; i++) {
#pragma HLS PIPELINE II=1
    const ap_uint<PE * TI::width> x = in.read();
    for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
      const TO v = get<TI>(x, pe);
      if (k == 0)
        acc[pe] = v;
      else if (MAX)
        acc[pe] = (v > acc[pe]) ? v : acc[pe];
      else
        acc[pe] = acc[pe] + v;
    }
    if (++k == K) {
      ap_uint<PE * TO::width> o = 0;
      for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
        put<TO>(o, pe, acc[pe]);
      }
      out.write(o);
      k = 0;
    }
  }
}

// ------------------------------------------------------------------------------------------------ pools

// element-wise maximum of two words of PE elements
template <typename T, unsigned PE>
inline ap_uint<PE * T::width> max_word(const ap_uint<PE * T::width>& a, const ap_uint<PE * T::width>& b) {
#pragma HLS INLINE
  ap_uint<PE * T::width> o = 0;
  for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
    const T x = get<T>(a, pe), y = get<T>(b, pe);
    put<T>(o, pe, (y > x) ? y : x);
  }
  return o;
}

// non-overlapping max pool (stride == kernel, no padding, floor mode; finn-hlslib StreamingMaxPool), one pass
// per input word, counters only. Along a row, the KW words of one window and channel fold are CF words apart:
// their running maximum moves through a CF-word shift register (registers, no memory read-modify-write). A
// window row's maximum is merged into the row buffer of output maxima (one word per output pixel and fold); the
// same buffer word is next touched IW * CF >= 2 iterations later (DEPENDENCE inter false). After every KH-th
// input row the finished row of maxima is flushed.
template <unsigned C, unsigned PE, unsigned IH, unsigned IW, unsigned KH, unsigned KW, typename T>
void max_pool(hls::stream<ap_uint<PE * T::width> >& in, hls::stream<ap_uint<PE * T::width> >& out,
              const unsigned reps) {
  const unsigned CF = C / PE;
  const unsigned OH = IH / KH, OW = IW / KW;
  ap_uint<PE * T::width> buf[OW * CF];
#pragma HLS DEPENDENCE variable=buf inter false
  bind_ram_s2p(buf, storage<0>());
  ap_uint<PE * T::width> hreg[CF];
#pragma HLS ARRAY_PARTITION variable=hreg complete dim=1
  for (unsigned rep = 0; rep < reps; rep++) {
    unsigned ky = 0, oy = 0;
    for (unsigned y = 0; y < IH; y++) {
      unsigned kx = 0, ox = 0, cf = 0, obase = 0, idx = 0;  // idx = ox * CF + cf, obase = ox * CF
      for (unsigned j = 0; j < IW * CF; j++) {
#pragma HLS PIPELINE II=1
        const ap_uint<PE * T::width> word = in.read();
        const ap_uint<PE * T::width> h = (kx == 0) ? word : max_word<T, PE>(hreg[CF - 1], word);
        for (unsigned q = CF - 1; q > 0; q--) {
#pragma HLS UNROLL
          hreg[q] = hreg[q - 1];
        }
        hreg[0] = h;
        if (kx == KW - 1 && oy < OH && ox < OW) {
          buf[idx] = (ky == 0) ? h : max_word<T, PE>(buf[idx], h);
        }
        if (++cf == CF) {
          cf = 0;
          if (++kx == KW) {
            kx = 0;
            ox++;
            obase += CF;
          }
          idx = obase;
        } else {
          idx++;
        }
      }
      if (ky == KH - 1 && oy < OH) {
        for (unsigned q = 0; q < OW * CF; q++) {
#pragma HLS PIPELINE II=1
          out.write(buf[q]);
        }
      }
      if (++ky == KH) {
        ky = 0;
        oy++;
      }
    }
  }
}

// sum over all NPIX pixels per channel (global average pool; the division lives in the next thresholds). The CF
// partial sums of a pixel's folds circulate through a CF-word shift register (registers): the sum read in an
// iteration is the one written CF iterations before, with no memory read-modify-write in the loop.
template <unsigned C, unsigned PE, unsigned NPIX, typename TI, typename TO>
void global_acc_pool(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
                     const unsigned reps) {
  const unsigned CF = C / PE;
  ap_uint<PE * TO::width> sreg[CF];
#pragma HLS ARRAY_PARTITION variable=sreg complete dim=1
  for (unsigned rep = 0; rep < reps; rep++) {
    unsigned pix = 0, cf = 0;
    for (unsigned i = 0; i < NPIX * CF + CF; i++) {
#pragma HLS PIPELINE II=1
      const ap_uint<PE * TO::width> tail = sreg[CF - 1];
      ap_uint<PE * TO::width> head = tail;
      if (i < NPIX * CF) {
        const ap_uint<PE * TI::width> x = in.read();
        for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
          const TO prev = (pix == 0) ? TO(0) : get<TO>(tail, pe);
          put<TO>(head, pe, TO(prev + get<TI>(x, pe)));
        }
      } else {
        out.write(tail);
      }
      for (unsigned q = CF - 1; q > 0; q--) {
#pragma HLS UNROLL
        sreg[q] = sreg[q - 1];
      }
      sreg[0] = head;
      if (++cf == CF) {
        cf = 0;
        pix++;
      }
    }
  }
}

// --------------------------------------------------------------------------------- elementwise layers

// standalone MultiThreshold over NPIX pixels of C channel slots
template <unsigned C, unsigned PE, unsigned NPIX, typename TI, typename TO, typename Act>
void thresholding(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
                  const Act& act, const unsigned reps) {
  const unsigned NF = C / PE;
  unsigned nf = 0;
  for (unsigned i = 0; i < reps * NPIX * NF; i++) {
#pragma HLS PIPELINE II=1
    const ap_uint<PE * TI::width> x = in.read();
    ap_uint<PE * TO::width> o = 0;
    for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
      put<TO>(o, pe, act.activate(nf, pe, get<TI>(x, pe)));
    }
    out.write(o);
    if (++nf == NF) nf = 0;
  }
}

// per-channel-slot Mul (MUL) or Add with integer parameters params[pe][nf]
template <unsigned C, unsigned PE, unsigned NPIX, bool MUL, typename TI, typename TP, typename TO>
void channelwise(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
                 const TP params[PE][C / PE], const unsigned reps) {
  const unsigned NF = C / PE;
  unsigned nf = 0;
  for (unsigned i = 0; i < reps * NPIX * NF; i++) {
#pragma HLS PIPELINE II=1
    const ap_uint<PE * TI::width> x = in.read();
    ap_uint<PE * TO::width> o = 0;
    for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
      const ap_int<TI::width + 1> v = get<TI>(x, pe);
      const TP p = params[pe][nf];
      put<TO>(o, pe, MUL ? TO(v * p) : TO(v + p));
    }
    out.write(o);
    if (++nf == NF) nf = 0;
  }
}

// y = KA * a + KB * b, element by element (residual join; KA/KB align power-of-two scaled codes)
template <unsigned PE, unsigned NWORDS, typename TA_, typename TB_, typename TO, int KA, int KB>
void add_streams(hls::stream<ap_uint<PE * TA_::width> >& in_a, hls::stream<ap_uint<PE * TB_::width> >& in_b,
                 hls::stream<ap_uint<PE * TO::width> >& out, const unsigned reps) {
  for (unsigned i = 0; i < reps * NWORDS; i++) {
#pragma HLS PIPELINE II=1
    const ap_uint<PE * TA_::width> a = in_a.read();
    const ap_uint<PE * TB_::width> b = in_b.read();
    ap_uint<PE * TO::width> o = 0;
    for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
      const ap_int<TA_::width + 1> x = get<TA_>(a, pe);
      const ap_int<TB_::width + 1> y = get<TB_>(b, pe);
      put<TO>(o, pe, TO(x * KA + y * KB));
    }
    out.write(o);
  }
}

// ------------------------------------------------------------------------------- stream plumbing

// NIN words of IN elements -> words of OUT = k * IN elements (element order kept)
template <unsigned IN, unsigned OUT, unsigned EB, unsigned NIN>
void dwc_up(hls::stream<ap_uint<IN * EB> >& in, hls::stream<ap_uint<OUT * EB> >& out, const unsigned reps) {
  const unsigned K = OUT / IN;
  ap_uint<OUT * EB> o = 0;
  unsigned k = 0;
  for (unsigned i = 0; i < reps * NIN; i++) {
#pragma HLS PIPELINE II=1
    o.range((k + 1) * IN * EB - 1, k * IN * EB) = in.read();
    if (++k == K) {
      out.write(o);
      k = 0;
    }
  }
}

// NIN words of IN = k * OUT elements -> k words of OUT elements each
template <unsigned IN, unsigned OUT, unsigned EB, unsigned NIN>
void dwc_down(hls::stream<ap_uint<IN * EB> >& in, hls::stream<ap_uint<OUT * EB> >& out, const unsigned reps) {
  const unsigned K = IN / OUT;
  ap_uint<IN * EB> x = 0;
  unsigned k = 0;
  for (unsigned i = 0; i < reps * NIN * K; i++) {
#pragma HLS PIPELINE II=1
    if (k == 0) x = in.read();
    out.write(x.range((k + 1) * OUT * EB - 1, k * OUT * EB));
    if (++k == K) k = 0;
  }
}

// one stream read by two consumers
template <unsigned W, unsigned NWORDS>
void duplicate(hls::stream<ap_uint<W> >& in, hls::stream<ap_uint<W> >& out0, hls::stream<ap_uint<W> >& out1,
               const unsigned reps) {
  for (unsigned i = 0; i < reps * NWORDS; i++) {
#pragma HLS PIPELINE II=1
    const ap_uint<W> x = in.read();
    out0.write(x);
    out1.write(x);
  }
}

}  // namespace qpass

#endif  // QPASS_DATAFLOW_H
