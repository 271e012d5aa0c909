#include "kws/smoothing.h"

#include <cassert>
#include <cstring>

namespace kws {

void ProbabilitiesU8(const int8_t* logits, size_t count, const uint32_t* exp_table, uint8_t* probs) {
  int32_t max_q = -128;
  for (size_t i = 0; i < count; ++i) max_q = logits[i] > max_q ? logits[i] : max_q;
  // 64-bit sums: never overflow, whatever the class count (cheap for a dozen classes).
  uint64_t total = 0;
  for (size_t i = 0; i < count; ++i) total += exp_table[max_q - logits[i]];  // index in [0, 255]
  // total >= exp_table[0] > 0 because the largest logit contributes exp_table[0].
  for (size_t i = 0; i < count; ++i) {
    const uint64_t e = exp_table[max_q - logits[i]];
    probs[i] = static_cast<uint8_t>((255u * e + total / 2) / total);
  }
}

PosteriorSmoother::PosteriorSmoother(uint8_t* history, uint32_t* sums, size_t classes, size_t window,
                                     uint8_t cutoff, const bool* detectable, uint32_t refractory)
    : history_(history),
      sums_(sums),
      classes_(classes),
      window_(window),
      cutoff_(cutoff),
      detectable_(detectable),
      refractory_(refractory) {
  assert(history != nullptr && sums != nullptr && detectable != nullptr && classes > 0 && window > 0);
  Reset();
}

void PosteriorSmoother::Reset() {
  std::memset(history_, 0, window_ * classes_);
  std::memset(sums_, 0, classes_ * sizeof(uint32_t));
  next_ = 0;
  cooldown_ = 0;
}

Decision PosteriorSmoother::Update(const uint8_t* probs) {
  std::memcpy(history_ + next_ * classes_, probs, classes_);
  next_ = (next_ + 1) % window_;
  for (size_t c = 0; c < classes_; ++c) {
    uint32_t s = 0;
    for (size_t w = 0; w < window_; ++w) s += history_[w * classes_ + c];
    sums_[c] = s;
  }
  Decision d{false, -1, 0, 0};
  for (size_t c = 0; c < classes_; ++c) {
    if (detectable_[c] && (d.label < 0 || sums_[c] > d.sum)) {
      d.label = static_cast<int>(c);
      d.sum = sums_[c];
    }
  }
  d.average = d.sum / static_cast<uint32_t>(window_);
  d.detected = d.label >= 0 && cooldown_ == 0 &&
               d.sum > static_cast<uint32_t>(cutoff_) * static_cast<uint32_t>(window_);
  if (cooldown_ > 0) --cooldown_;
  if (d.detected) {
    // The same utterance must not fire again: fresh evidence, and not before the refractory period.
    std::memset(history_, 0, window_ * classes_);
    next_ = 0;
    cooldown_ = refractory_;
  }
  return d;
}

}  // namespace kws
