#pragma once
// A Hugging Face tensor of the output: what the mapping produces and the layouts place.
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.hpp"

namespace m2h::tensors {

struct OutputTensor {
    std::string name;  // "model.layers.0.self_attn.q_proj.weight"
    DType dtype;
    std::vector<std::uint64_t> shape;
    std::uint64_t nbytes() const;
};

}  // namespace m2h::tensors
