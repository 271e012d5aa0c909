#include "kws/feature_ring.h"

#include <cassert>
#include <cstring>

namespace kws {

FeatureRing::FeatureRing(int8_t* storage, size_t frames, size_t features_per_frame, size_t stride)
    : storage_(storage), frames_(frames), features_(features_per_frame), stride_(stride), until_due_(frames) {
  assert(storage != nullptr && frames > 0 && features_per_frame > 0 && stride > 0);
}

bool FeatureRing::Push(const int8_t* frame) {
  std::memcpy(storage_ + head_ * features_, frame, features_);
  head_ = (head_ + 1) % frames_;
  if (count_ < frames_) ++count_;
  // A countdown instead of a frame counter: exact forever, no overflow on a device that runs for years.
  if (--until_due_ == 0) {
    until_due_ = stride_;
    return true;
  }
  return false;
}

void FeatureRing::CopyWindow(int8_t* dst) const {
  // Once full, head_ is the oldest frame: copy [head_, end) then [0, head_).
  const size_t tail = (frames_ - head_) * features_;
  std::memcpy(dst, storage_ + head_ * features_, tail);
  std::memcpy(dst + tail, storage_, head_ * features_);
}

void FeatureRing::Reset() {
  head_ = 0;
  count_ = 0;
  until_due_ = frames_;
}

}  // namespace kws
