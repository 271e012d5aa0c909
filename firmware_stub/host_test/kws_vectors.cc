// Bit-identity check against edgekd's Python reference (edgekd.detect).
//
//   kws_vectors FILE
//
// FILE is written by tests/test_firmware.py: a first line "edgekd-kws-vectors 1", then one array per
// line, "name count v1 v2 ...", all integers (floats travel as their IEEE-754 float32 bit patterns, so
// nothing is lost to decimal conversion). It holds inputs and the values edgekd computed from them:
//
//   quant.cases                        number of exhaustive quantization cases, then for each i:
//   quant.<i>.scale_bits / .zero_point / .raw (uint16) / .expected (int8)
//   pipe.*                             one streaming run: settings, raw frames, and per inference the
//                                      expected window, probabilities, sums and decision
//
// The program recomputes every expected value with components/kws and exits 1 at the first
// difference, printing where it is; 0 with a summary when all are identical.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kws/kws.h"
#include "kws/pipeline.h"

namespace {

using Arrays = std::map<std::string, std::vector<long long>>;

bool Load(const char* path, Arrays* out, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = std::string(path) + ": cannot open";
    return false;
  }
  std::string magic;
  int version = 0;
  in >> magic >> version;
  if (magic != "edgekd-kws-vectors" || version != 1) {
    *error = std::string(path) + ": not an edgekd-kws-vectors 1 file";
    return false;
  }
  std::string name;
  size_t count = 0;
  while (in >> name >> count) {
    std::vector<long long>& values = (*out)[name];
    values.resize(count);
    for (size_t i = 0; i < count; ++i) {
      if (!(in >> values[i])) {
        *error = std::string(path) + ": array '" + name + "' is truncated";
        return false;
      }
    }
  }
  if (!in.eof()) {
    *error = std::string(path) + ": malformed line after array '" + name + "'";
    return false;
  }
  return true;
}

class Checker {
 public:
  explicit Checker(const Arrays& a) : arrays_(a) {}

  const std::vector<long long>& Get(const std::string& name, size_t expected_count = 0) {
    auto it = arrays_.find(name);
    if (it == arrays_.end()) {
      Fail("missing array '" + name + "'");
      static const std::vector<long long> empty;
      return empty;
    }
    if (expected_count && it->second.size() != expected_count) {
      Fail("array '" + name + "' has " + std::to_string(it->second.size()) + " values, expected " +
           std::to_string(expected_count));
    }
    return it->second;
  }

  long long Scalar(const std::string& name) {
    const auto& v = Get(name, 1);
    return v.empty() ? 0 : v[0];
  }

  static float FloatFromBits(long long bits) {
    const uint32_t u = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }

  // Records the first mismatch only (later ones are usually consequences).
  void Expect(long long python, long long cpp, const std::string& where) {
    ++compared_;
    if (python != cpp && ok_) {
      Fail(where + ": python " + std::to_string(python) + ", c++ " + std::to_string(cpp));
    }
  }

  void Fail(const std::string& message) {
    if (ok_) std::printf("MISMATCH %s\n", message.c_str());
    ok_ = false;
  }

  bool ok() const { return ok_; }
  size_t compared() const { return compared_; }

 private:
  const Arrays& arrays_;
  bool ok_ = true;
  size_t compared_ = 0;
};

void CheckQuantization(Checker& c) {
  const long long cases = c.Scalar("quant.cases");
  for (long long i = 0; i < cases && c.ok(); ++i) {
    const std::string p = "quant." + std::to_string(i);
    const kws::InputQuantization q{Checker::FloatFromBits(c.Scalar(p + ".scale_bits")),
                                   static_cast<int32_t>(c.Scalar(p + ".zero_point"))};
    const float feature_scale = Checker::FloatFromBits(c.Scalar("feature_scale_bits"));
    const auto& raw = c.Get(p + ".raw");
    const auto& expected = c.Get(p + ".expected", raw.size());
    for (size_t k = 0; k < raw.size() && k < expected.size() && c.ok(); ++k) {
      const int8_t got = kws::QuantizeRawFeature(static_cast<uint16_t>(raw[k]), feature_scale, q);
      c.Expect(expected[k], got, p + " raw " + std::to_string(raw[k]));
    }
  }
}

void CheckPipeline(Checker& c, size_t* inferences, size_t* detections) {
  const size_t frames = static_cast<size_t>(c.Scalar("pipe.frames"));
  const size_t features = static_cast<size_t>(c.Scalar("pipe.features"));
  const size_t classes = static_cast<size_t>(c.Scalar("pipe.classes"));
  const size_t window = static_cast<size_t>(c.Scalar("pipe.window"));
  const auto& table_in = c.Get("pipe.exp_table", kws::kExpTableSize);
  const auto& detectable_in = c.Get("pipe.detectable", classes);
  if (!c.ok()) return;
  std::vector<uint32_t> table(table_in.begin(), table_in.end());
  std::unique_ptr<bool[]> detectable(new bool[classes]);
  for (size_t k = 0; k < classes; ++k) detectable[k] = detectable_in[k] != 0;
  const kws::Settings s{frames,
                        features,
                        static_cast<size_t>(c.Scalar("pipe.stride")),
                        Checker::FloatFromBits(c.Scalar("feature_scale_bits")),
                        {Checker::FloatFromBits(c.Scalar("pipe.scale_bits")),
                         static_cast<int32_t>(c.Scalar("pipe.zero_point"))},
                        classes,
                        table.data(),
                        detectable.get(),
                        window,
                        static_cast<uint8_t>(c.Scalar("pipe.cutoff")),
                        static_cast<uint32_t>(c.Scalar("pipe.refractory"))};
  if (const char* error = kws::ValidateSettings(s)) return c.Fail(std::string("pipe settings: ") + error);

  std::vector<int8_t> ring(frames * features), frame(features), input(frames * features);
  std::vector<uint8_t> history(window * classes), probs(classes);
  std::vector<uint32_t> sums(classes);
  kws::Pipeline pipeline(s, ring.data(), frame.data(), history.data(), sums.data(), probs.data());

  const auto& raw = c.Get("pipe.raw");
  const auto& due = c.Get("pipe.due_frames");
  const size_t n = due.size();
  const auto& windows = c.Get("pipe.windows", n * frames * features);
  const auto& logits = c.Get("pipe.logits", n * classes);
  const auto& want_probs = c.Get("pipe.probs", n * classes);
  const auto& want_sums = c.Get("pipe.sums", n * classes);
  const auto& want_detected = c.Get("pipe.detected", n);
  const auto& want_label = c.Get("pipe.label", n);
  const auto& want_sum = c.Get("pipe.sum", n);
  const auto& want_average = c.Get("pipe.average", n);
  if (!c.ok() || raw.size() % features != 0) return c.Fail("pipe.raw is not whole frames");

  std::vector<uint16_t> raw_frame(features);
  std::vector<int8_t> out(classes);
  size_t k = 0;  // inference index
  const size_t total_frames = raw.size() / features;
  for (size_t t = 1; t <= total_frames && c.ok(); ++t) {
    for (size_t f = 0; f < features; ++f) raw_frame[f] = static_cast<uint16_t>(raw[(t - 1) * features + f]);
    const bool run = pipeline.PushFrame(raw_frame.data());
    const bool expected_run = k < n && static_cast<size_t>(due[k]) == t;
    c.Expect(expected_run, run, "inference due after frame " + std::to_string(t));
    if (!run || !c.ok()) continue;
    const std::string at = "inference " + std::to_string(k) + " (frame " + std::to_string(t) + ")";
    pipeline.CopyInput(input.data());
    for (size_t i = 0; i < input.size() && c.ok(); ++i) {
      c.Expect(windows[k * input.size() + i], input[i], at + " window value " + std::to_string(i));
    }
    for (size_t j = 0; j < classes; ++j) out[j] = static_cast<int8_t>(logits[k * classes + j]);
    const kws::Decision d = pipeline.OnLogits(out.data());
    for (size_t j = 0; j < classes && c.ok(); ++j) {
      c.Expect(want_probs[k * classes + j], pipeline.probabilities()[j],
               at + " probability " + std::to_string(j));
      c.Expect(want_sums[k * classes + j], pipeline.sums()[j], at + " window sum " + std::to_string(j));
    }
    c.Expect(want_label[k], d.label, at + " best label");
    c.Expect(want_sum[k], d.sum, at + " best sum");
    c.Expect(want_average[k], d.average, at + " average");
    c.Expect(want_detected[k], d.detected, at + " detected");
    *detections += d.detected ? 1 : 0;
    ++k;
  }
  if (c.ok() && k != n) {
    c.Fail("python scheduled " + std::to_string(n) + " inferences, c++ ran " + std::to_string(k));
  }
  *inferences = k;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s VECTORS_FILE\n", argv[0]);
    return 2;
  }
  Arrays arrays;
  std::string error;
  if (!Load(argv[1], &arrays, &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  Checker c(arrays);
  CheckQuantization(c);
  size_t inferences = 0, detections = 0;
  if (c.ok()) CheckPipeline(c, &inferences, &detections);
  if (!c.ok()) return 1;
  std::printf("OK: %zu values bit-identical (%zu inferences, %zu detections)\n", c.compared(), inferences,
              detections);
  return 0;
}
