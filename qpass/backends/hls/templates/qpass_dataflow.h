// qpass streaming dataflow layer library (HLS C++), written for qpass (Apache-2.0).
//
// Every layer is one function over hls::stream<ap_uint<N * EB>> words holding N packed elements of EB bits
// (element i in bits [i*EB, (i+1)*EB), two's complement for signed element types), one II=1 pipelined loop per
// frame in the style of finn-hlslib: the matrix-vector-threshold unit (MVTU) is one flattened loop of
// NUMV * NF * SF iterations with an input buffer filled at nf == 0 and reused for the other row folds, PE
// accumulators, and a threshold activation that counts thresholds with acc >= T (MultiThreshold semantics).
// Streams carry one frame per call of the top function, pixels in (row, column, channel) order.
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

// element i of a packed word, as T (T::width bits; ap_int or ap_uint)
template <typename T, int W>
inline T get(const ap_uint<W>& word, unsigned i) {
#pragma HLS INLINE
  ap_uint<T::width> bits = word.range((i + 1) * T::width - 1, i * T::width);
  T v = bits;  // same bits (ap_int of equal width reinterprets)
  return v;
}

template <typename T, int W>
inline void put(ap_uint<W>& word, unsigned i, const T& v) {
#pragma HLS INLINE
  ap_uint<T::width> bits = v;
  word.range((i + 1) * T::width - 1, i * T::width) = bits;
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
    T v = bits;
    return v;
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

// --------------------------------------------------------------------------------- matrix-vector unit

// MW inputs, MH outputs, applied to NUMV vectors per frame; weights.elem<TW>(pe, nf * SF + sf, s) is the weight
// of row nf * PE + pe, column sf * SIMD + s (finn-hlslib layout: rows interleaved across PEs). The input vector
// is kept (unpacked) in inbuf while nf == 0 reads it and reused for the other NF - 1 row folds.
template <unsigned MW, unsigned MH, unsigned SIMD, unsigned PE, unsigned NUMV, typename TI, typename TW,
          typename TA, typename TO, typename Wgt, typename Act>
void mvtu(hls::stream<ap_uint<SIMD * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
          const Wgt& weights, const Act& act) {
  const unsigned SF = MW / SIMD;
  const unsigned NF = MH / PE;
  TI inbuf[SF][SIMD];
#pragma HLS ARRAY_PARTITION variable=inbuf complete dim=2
  TA acc[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
  unsigned nf = 0, sf = 0, tile = 0;
  for (unsigned i = 0; i < NUMV * NF * SF; i++) {
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
        sum += weights.template elem<TW>(pe, tile, s) * inbuf[sf][s];
      }
      acc[pe] = sum;
    }
    tile++;
    if (++sf == SF) {
      ap_uint<PE * TO::width> o = 0;
      for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
        put<TO>(o, pe, act.activate(nf, pe, acc[pe]));
      }
      out.write(o);
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
// value for a max pool); K + S padded row buffers.
// Per output pixel the window words come in (ky, kx, channel fold) order, or (channel fold, ky, kx) when
// DEPTHWISE (for the vector-vector unit and window reductions, which accumulate one channel fold at a time).
template <unsigned C, unsigned SIMD, unsigned IH, unsigned IW, unsigned KH, unsigned KW, unsigned SH, unsigned SW,
          unsigned PT, unsigned PL, unsigned PB, unsigned PR, bool DEPTHWISE, typename T, int PAD>
void sliding_window(hls::stream<ap_uint<SIMD * T::width> >& in, hls::stream<ap_uint<SIMD * T::width> >& out) {
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
  for (unsigned j = 0; j < KH * ROWW; j++) {  // prefill KH padded rows
#pragma HLS PIPELINE II=1
    const unsigned y = j / ROWW, slot = j % ROWW, x = slot / CF;
    const bool real = y >= PT && y < PT + IH && x >= PL && x < PL + IW;
    buf[y % R][slot] = real ? in.read() : pad_word;
  }
  for (unsigned r = 0; r < OH; r++) {
    for (unsigned j = 0; j < M; j++) {  // emit one row of windows while prefetching the next SH rows
#pragma HLS PIPELINE II=1
      if (j < WB) {
        const unsigned ox = j / WIN, rem = j % WIN;
        unsigned ky, kx, cf;
        if (DEPTHWISE) {
          cf = rem / (KH * KW);
          ky = (rem / KW) % KH;
          kx = rem % KW;
        } else {
          ky = rem / (KW * CF);
          kx = (rem / CF) % KW;
          cf = rem % CF;
        }
        out.write(buf[(r * SH + ky) % R][(ox * SW + kx) * CF + cf]);
      }
      if (j < RB) {
        const unsigned y = KH + r * SH + j / ROWW, slot = j % ROWW, x = slot / CF;
        if (y < PH) {
          const bool real = y >= PT && y < PT + IH && x >= PL && x < PL + IW;
          buf[y % R][slot] = real ? in.read() : pad_word;
        }
      }
    }
  }
}

// --------------------------------------------------------------------- vector-vector unit (depthwise)

// depthwise convolution over K = KH*KW window positions, PE channels per word, input words in
// (channel fold, k) order from a DEPTHWISE sliding window; weights.elem<TW>(nf, k, pe) is the weight of
// channel nf * PE + pe at window position k.
template <unsigned C, unsigned PE, unsigned K, unsigned NUMV, typename TI, typename TW, typename TA, typename TO,
          typename Wgt, typename Act>
void vvau(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
          const Wgt& weights, const Act& act) {
  const unsigned NF = C / PE;
  TA acc[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
  unsigned nf = 0, k = 0;
  for (unsigned i = 0; i < NUMV * NF * K; i++) {
#pragma HLS PIPELINE II=1
    const ap_uint<PE * TI::width> x = in.read();
    for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
      const TA prev = (k == 0) ? TA(0) : acc[pe];
      acc[pe] = prev + weights.template elem<TW>(nf, k, pe) * get<TI>(x, pe);
    }
    if (++k == K) {
      ap_uint<PE * TO::width> o = 0;
      for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
        put<TO>(o, pe, act.activate(nf, pe, acc[pe]));
      }
      out.write(o);
      k = 0;
      if (++nf == NF) nf = 0;
    }
  }
}

// window maximum or sum over K positions (DEPTHWISE window order), PE channels per word
template <unsigned C, unsigned PE, unsigned K, unsigned NUMV, bool MAX, typename TI, typename TO>
void window_reduce(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out) {
  const unsigned NF = C / PE;
  TO acc[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=1
  unsigned k = 0;
  for (unsigned i = 0; i < NUMV * NF * K; i++) {
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

// non-overlapping max pool (stride == kernel, no padding, floor mode): one pass per input word, the row of
// output maxima flushed after every KH-th input row (finn-hlslib StreamingMaxPool)
template <unsigned C, unsigned PE, unsigned IH, unsigned IW, unsigned KH, unsigned KW, typename T>
void max_pool(hls::stream<ap_uint<PE * T::width> >& in, hls::stream<ap_uint<PE * T::width> >& out) {
  const unsigned CF = C / PE;
  const unsigned OH = IH / KH, OW = IW / KW;
  ap_uint<PE * T::width> buf[OW * CF];
  for (unsigned y = 0; y < IH; y++) {
    for (unsigned j = 0; j < IW * CF; j++) {
#pragma HLS PIPELINE II=1
      const unsigned x = j / CF, cf = j % CF;
      const ap_uint<PE * T::width> word = in.read();
      if (y < OH * KH && x < OW * KW) {
        const unsigned idx = (x / KW) * CF + cf;
        if (y % KH == 0 && x % KW == 0) {
          buf[idx] = word;
        } else {
          ap_uint<PE * T::width> cur = buf[idx];
          for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
            const T a = get<T>(cur, pe), b = get<T>(word, pe);
            put<T>(cur, pe, (b > a) ? b : a);
          }
          buf[idx] = cur;
        }
      }
    }
    if ((y + 1) % KH == 0 && (y + 1) / KH <= OH) {
      for (unsigned j = 0; j < OW * CF; j++) {
#pragma HLS PIPELINE II=1
        out.write(buf[j]);
      }
    }
  }
}

// sum over all NPIX pixels per channel (global average pool; the division lives in the next thresholds)
template <unsigned C, unsigned PE, unsigned NPIX, typename TI, typename TO>
void global_acc_pool(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out) {
  const unsigned CF = C / PE;
  TO acc[CF][PE];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=2
  for (unsigned i = 0; i < NPIX * CF + CF; i++) {
#pragma HLS PIPELINE II=1
    if (i < NPIX * CF) {
      const unsigned cf = i % CF;
      const ap_uint<PE * TI::width> x = in.read();
      for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
        const TO prev = (i < CF) ? TO(0) : acc[cf][pe];
        acc[cf][pe] = prev + get<TI>(x, pe);
      }
    } else {
      const unsigned cf = i - NPIX * CF;
      ap_uint<PE * TO::width> o = 0;
      for (unsigned pe = 0; pe < PE; pe++) {
#pragma HLS UNROLL
        put<TO>(o, pe, acc[cf][pe]);
      }
      out.write(o);
    }
  }
}

// --------------------------------------------------------------------------------- elementwise layers

// standalone MultiThreshold over NPIX pixels of C channel slots
template <unsigned C, unsigned PE, unsigned NPIX, typename TI, typename TO, typename Act>
void thresholding(hls::stream<ap_uint<PE * TI::width> >& in, hls::stream<ap_uint<PE * TO::width> >& out,
                  const Act& act) {
  const unsigned NF = C / PE;
  unsigned nf = 0;
  for (unsigned i = 0; i < NPIX * NF; i++) {
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
                 const TP params[PE][C / PE]) {
  const unsigned NF = C / PE;
  unsigned nf = 0;
  for (unsigned i = 0; i < NPIX * NF; i++) {
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
                 hls::stream<ap_uint<PE * TO::width> >& out) {
  for (unsigned i = 0; i < NWORDS; i++) {
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
void dwc_up(hls::stream<ap_uint<IN * EB> >& in, hls::stream<ap_uint<OUT * EB> >& out) {
  const unsigned K = OUT / IN;
  ap_uint<OUT * EB> o = 0;
  unsigned k = 0;
  for (unsigned i = 0; i < NIN; i++) {
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
void dwc_down(hls::stream<ap_uint<IN * EB> >& in, hls::stream<ap_uint<OUT * EB> >& out) {
  const unsigned K = IN / OUT;
  ap_uint<IN * EB> x = 0;
  unsigned k = 0;
  for (unsigned i = 0; i < NIN * K; i++) {
#pragma HLS PIPELINE II=1
    if (k == 0) x = in.read();
    out.write(x.range((k + 1) * OUT * EB - 1, k * OUT * EB));
    if (++k == K) k = 0;
  }
}

// one stream read by two consumers
template <unsigned W, unsigned NWORDS>
void duplicate(hls::stream<ap_uint<W> >& in, hls::stream<ap_uint<W> >& out0, hls::stream<ap_uint<W> >& out1) {
  for (unsigned i = 0; i < NWORDS; i++) {
#pragma HLS PIPELINE II=1
    const ap_uint<W> x = in.read();
    out0.write(x);
    out1.write(x);
  }
}

}  // namespace qpass

#endif  // QPASS_DATAFLOW_H
