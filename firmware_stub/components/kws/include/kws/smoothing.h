// Posterior probabilities from int8 logits, their moving sum over inferences, and the detection rule.
//
// Reference: edgekd.detect.probabilities_u8 and edgekd.detect.PosteriorSmoother. Integer arithmetic
// only (the exp table and the cutoff are data from model_settings.h), so results are bit-identical on
// every compiler and CPU.
//   e_i = exp_table[max(q) - q_i],  S = sum(e),  p_i = (255 * e_i + S / 2) / S        (uint8)
//   sum_c = p_c summed over the last `window` inferences (zeros before the first / after a detection)
//   best = keyword class with the largest sum (lowest index on ties)
//   detected = sum_best > cutoff * window and no refractory period is running;
//   a detection clears the history and suppresses the next `refractory` updates.
#ifndef KWS_SMOOTHING_H_
#define KWS_SMOOTHING_H_

#include <cstddef>
#include <cstdint>

namespace kws {

constexpr size_t kExpTableSize = 256;

// int8 logits[count] -> uint8 probabilities[count] (255 = 1.0) using the build's exp table.
void ProbabilitiesU8(const int8_t* logits, size_t count, const uint32_t* exp_table, uint8_t* probs);

struct Decision {
  bool detected;  // the best keyword's window sum exceeded cutoff * window
  int label;      // best detectable class, -1 if none is detectable
  uint32_t sum;   // its window sum of uint8 probabilities
  uint32_t average;  // sum / window (0..255)
};

class PosteriorSmoother {
 public:
  // history: window * classes bytes; sums: classes values; detectable: classes flags. All caller-owned
  // (static on the device). window >= 1, classes >= 1. refractory: updates after a detection that
  // cannot fire (model_settings.h kRefractoryInferences).
  PosteriorSmoother(uint8_t* history, uint32_t* sums, size_t classes, size_t window, uint8_t cutoff,
                    const bool* detectable, uint32_t refractory = 0);

  // Adds one inference's probabilities[classes] and applies the rule.
  Decision Update(const uint8_t* probs);

  // Per-class window sums computed by the last Update (before a detection's reset).
  const uint32_t* sums() const { return sums_; }
  size_t classes() const { return classes_; }
  size_t window() const { return window_; }

  void Reset();

 private:
  uint8_t* history_;
  uint32_t* sums_;
  size_t classes_;
  size_t window_;
  uint8_t cutoff_;
  const bool* detectable_;
  uint32_t refractory_;
  size_t next_ = 0;       // history row the next inference goes to
  uint32_t cooldown_ = 0;  // updates left in the refractory period
};

}  // namespace kws

#endif  // KWS_SMOOTHING_H_
