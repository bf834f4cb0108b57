#include "hub/generation_config.hpp"

namespace m2h::hub {

nlohmann::json generation_config(const nlohmann::json& config) {
    nlohmann::json g = {{"_from_model_config", true}};
    for (const char* id : {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"})
        if (const auto it = config.find(id); it != config.end() && !it->is_null()) g[id] = *it;
    if (const auto it = config.find("transformers_version"); it != config.end()) g["transformers_version"] = *it;
    return g;  // ordered by key, as transformers writes it (sort_keys)
}

}  // namespace m2h::hub
