// A ring of quantized feature frames: the model input is the newest `frames` frames, oldest first.
//
// Reference: edgekd.detect.window_schedule / feature_windows. An inference is due when the ring
// first becomes full and then every `stride` frames, i.e. after frame counts frames + k * stride.
// Storage is supplied by the caller (static on the device: no heap).
#ifndef KWS_FEATURE_RING_H_
#define KWS_FEATURE_RING_H_

#include <cstddef>
#include <cstdint>

namespace kws {

class FeatureRing {
 public:
  // `storage` holds frames * features_per_frame bytes; frames, features_per_frame, stride >= 1.
  FeatureRing(int8_t* storage, size_t frames, size_t features_per_frame, size_t stride);

  // Appends one frame of features_per_frame values (overwriting the oldest once full).
  // Returns true when an inference is due on the window that now ends with this frame.
  bool Push(const int8_t* frame);

  // Copies the window, oldest frame first, into dst (frames * features_per_frame bytes, e.g. the
  // model's input tensor). Only meaningful once full().
  void CopyWindow(int8_t* dst) const;

  // Forgets all frames (e.g. after the microphone restarts); the next inference needs a full ring.
  void Reset();

  bool full() const { return count_ == frames_; }
  size_t frames() const { return frames_; }
  size_t features_per_frame() const { return features_; }
  size_t window_bytes() const { return frames_ * features_; }

 private:
  int8_t* storage_;
  size_t frames_;
  size_t features_;
  size_t stride_;
  size_t head_ = 0;   // slot the next frame goes to (= oldest frame once full)
  size_t count_ = 0;  // frames held, up to frames_
  size_t until_due_;  // frames until the next inference
};

}  // namespace kws

#endif  // KWS_FEATURE_RING_H_
