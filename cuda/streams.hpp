// Stream ordering helpers of the CUDA back end (host code, no CUDA types).
// Kept out of device.hpp so that the kernels' translation unit does not
// depend on them.
#pragma once

#include "device.hpp"

namespace optdiff {
namespace gpu {

// True while `stream` is being captured into a CUDA graph (then nothing may
// synchronise or free memory outside the stream's order).
bool stream_is_capturing(Stream stream);

// Work queued on `waiter` after this call starts only after the work queued
// on `producer` so far (an event recorded on `producer` and waited for on
// `waiter`); nothing blocks on the host. No-op when both are the same stream.
void stream_wait(Stream waiter, Stream producer);

}  // namespace gpu
}  // namespace optdiff
