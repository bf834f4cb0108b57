#pragma once
// Pure: generation_config.json as transformers' save_pretrained writes it for a causal LM made from config.json
// (GenerationConfig.from_model_config): the special-token ids the config has, nothing else invented.
#include <nlohmann/json.hpp>

namespace m2h::hub {

nlohmann::json generation_config(const nlohmann::json& config);

}  // namespace m2h::hub
