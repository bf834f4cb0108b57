#include "tensors/output_tensor.hpp"

#include "common/error.hpp"

namespace m2h::tensors {

std::uint64_t OutputTensor::nbytes() const {
    std::uint64_t n = dtype_size(dtype);
    for (const std::uint64_t d : shape)
        if (__builtin_mul_overflow(n, d, &n)) throw Error(name, "tensor byte size overflows 64 bits");
    return n;
}

}  // namespace m2h::tensors
