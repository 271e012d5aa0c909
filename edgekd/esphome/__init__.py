"""ESPHome's micro_wake_word, as a contract and as a runtime edgekd can run on the host.

- `contract`: what the component accepts (model tensors, ops, resource variables, the v2 manifest) and
  the integer feature mapping it feeds, checked for any model — edgekd's or microWakeWord's.
- `engine`: the component's inference loop on TFLite Micro: a continuous micro frontend, its int8
  feature mapping, one invoke per `stride` frames, the sliding-window rule and its cool-off.

A leaf below the stages: it imports only `edgekd.audio`, `edgekd.verify.tflite_info` and the errors.
"""
