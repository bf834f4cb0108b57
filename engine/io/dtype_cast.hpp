#pragma once
// Exact conversions between the float types --dtype offers, as torch's Tensor.to does them: widening is
// exact, narrowing rounds to nearest even (NaN stays NaN, overflow becomes infinity).
#include <cstddef>
#include <span>

#include "common/dtype.hpp"

namespace m2h::io {

// Converts src (elements of `from`) into dst (elements of `to`); sizes must match the element counts.
// Same type is a memcpy. Buffers need no alignment. Written so the compiler vectorises the inner loops.
void cast(DType from, DType to, std::span<const std::byte> src, std::span<std::byte> dst);

}  // namespace m2h::io
