// The platform-independent keyword-spotting pipeline: quantization, feature ring, posterior smoothing.
// Everything here builds with any C++17 compiler (host tests) and with ESP-IDF (the device).
#ifndef KWS_KWS_H_
#define KWS_KWS_H_

#include "kws/feature_ring.h"
#include "kws/quantize.h"
#include "kws/smoothing.h"

#endif  // KWS_KWS_H_
