#pragma once
// config.json of the converted model, from the saved Megatron args (table in docs/formats.md §4.4).
#include <cstdint>

#include <nlohmann/json.hpp>

#include "model/model_spec.hpp"

namespace m2h::model {

// `vocab_size` is the number of embedding rows written; `dtype` the dtype of the written weights.
nlohmann::json hf_config(const ModelSpec& spec, const nlohmann::json& args, std::uint64_t vocab_size, DType dtype);

}  // namespace m2h::model
