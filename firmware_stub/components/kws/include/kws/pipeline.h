// The streaming pipeline between the audio frontend and the application: frontend frames in,
// model input windows and detection decisions out. The model itself runs outside (TFLite Micro on the
// device, anything on the host), so this stays platform-independent and host-testable:
//
//   for each frontend frame:   if (pipeline.PushFrame(frame.values)) {
//                                pipeline.CopyInput(input_tensor);   // int8 [frames * features]
//                                model.Invoke();
//                                Decision d = pipeline.OnLogits(output_tensor);   // int8 [classes]
//                              }
//
// Settings come from the build's model_settings.h (see main/main.cc); buffers are caller-owned.
#ifndef KWS_PIPELINE_H_
#define KWS_PIPELINE_H_

#include <cstddef>
#include <cstdint>

#include "kws/feature_ring.h"
#include "kws/quantize.h"
#include "kws/smoothing.h"

namespace kws {

struct Settings {
  size_t frames;                // feature frames per model input (ring capacity)
  size_t features;              // values per frame (frontend channels)
  size_t stride;                // frames between inferences once the ring is full
  float feature_scale;          // float feature = uint16 frontend value * feature_scale
  InputQuantization input;      // the model input tensor's quantization
  size_t classes;               // model outputs
  const uint32_t* exp_table;    // kExpTableSize entries (model_settings.h kExpTable)
  const bool* detectable;       // classes flags: which classes may raise a detection
  size_t window;                // inferences in the moving sum
  uint8_t cutoff;               // uint8 probability cutoff
  uint32_t refractory;          // inferences after a detection that cannot fire
};

// nullptr when `s` is usable, else a message naming the bad field.
const char* ValidateSettings(const Settings& s);

// Statically sized buffers for a Pipeline (e.g. `static kws::Buffers<kFeatureFrames, ...> buffers;`).
template <size_t Frames, size_t Features, size_t Classes, size_t Window>
struct Buffers {
  int8_t ring[Frames * Features];
  int8_t frame[Features];
  uint8_t history[Window * Classes];
  uint32_t sums[Classes];
  uint8_t probs[Classes];
};

class Pipeline {
 public:
  // Buffers: ring frames*features, frame features, history window*classes, sums classes, probs classes.
  Pipeline(const Settings& s, int8_t* ring, int8_t* frame, uint8_t* history, uint32_t* sums, uint8_t* probs);

  template <size_t Frames, size_t Features, size_t Classes, size_t Window>
  Pipeline(const Settings& s, Buffers<Frames, Features, Classes, Window>& b)
      : Pipeline(s, b.ring, b.frame, b.history, b.sums, b.probs) {
    static_assert(Frames > 0 && Features > 0 && Classes > 0 && Window > 0, "empty buffers");
  }

  // Quantizes one frame of `features` uint16 frontend values into the ring.
  // Returns true when the model should run on the current window.
  bool PushFrame(const uint16_t* raw);

  // Writes the current window (oldest frame first) into the model input: frames * features int8.
  void CopyInput(int8_t* input) const { ring_.CopyWindow(input); }

  // Consumes the model's int8 logits[classes] and applies the smoothing and threshold.
  Decision OnLogits(const int8_t* logits);

  // The probabilities computed by the last OnLogits (uint8, 255 = 1.0).
  const uint8_t* probabilities() const { return probs_; }
  const uint32_t* sums() const { return smoother_.sums(); }
  const int8_t* last_frame() const { return frame_; }

  // Starts over (e.g. after the microphone stopped): empty ring, cleared history.
  void Reset();

 private:
  Settings settings_;
  FeatureRing ring_;
  PosteriorSmoother smoother_;
  int8_t* frame_;
  uint8_t* probs_;
};

}  // namespace kws

#endif  // KWS_PIPELINE_H_
