// Minimal hls::stream for C simulation with g++, written for qpass (Apache-2.0). It is NOT the vendor header:
// a project synthesised with Vitis HLS uses the tool's own hls_stream.h (this file lives in csim/ and is only
// on the include path of the g++ C simulation). Unbounded FIFO backed by std::deque; reading an empty stream
// is a hard error (a deadlock in hardware).
#ifndef QPASS_CSIM_HLS_STREAM_H
#define QPASS_CSIM_HLS_STREAM_H

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

#define QPASS_CSIM_STREAM 1

namespace hls {

// number of streams destroyed while still holding data (the testbench fails when it is not 0)
inline unsigned long& stream_leftovers() {
  static unsigned long n = 0;
  return n;
}

template <typename T>
class stream {
 public:
  stream() : name_("stream") {}
  explicit stream(const char* name) : name_(name ? name : "stream") {}
  ~stream() {
    if (!q_.empty()) {
      std::fprintf(stderr, "hls::stream '%s': destroyed with %lu words left\n", name_.c_str(),
                   (unsigned long)q_.size());
      ++stream_leftovers();
    }
  }

  void write(const T& v) { q_.push_back(v); }
  void operator<<(const T& v) { write(v); }

  T read() {
    if (q_.empty()) {
      std::fprintf(stderr, "hls::stream '%s': read from an empty stream\n", name_.c_str());
      std::abort();
    }
    T v = q_.front();
    q_.pop_front();
    return v;
  }
  void read(T& v) { v = read(); }
  void operator>>(T& v) { v = read(); }

  bool read_nb(T& v) {
    if (q_.empty()) return false;
    v = read();
    return true;
  }
  bool write_nb(const T& v) {
    write(v);
    return true;
  }

  bool empty() const { return q_.empty(); }
  bool full() const { return false; }
  std::size_t size() const { return q_.size(); }

 private:
  stream(const stream&);             // streams are not copyable
  stream& operator=(const stream&);  // (as in HLS)
  std::deque<T> q_;
  std::string name_;
};

}  // namespace hls

#endif  // QPASS_CSIM_HLS_STREAM_H
