#pragma once
// Where the run's tokenizer is. Megatron's args name it: with tokenizer_type HuggingFaceTokenizer, tokenizer_model
// is a local folder or a Hub id, which is looked up in the local Hugging Face cache (nothing is downloaded).
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace m2h::hub {

struct TokenizerLookup {
    std::string named;                  // what the args name, for messages ("" when they name no HF tokenizer)
    std::string folder;                 // where its files are; "" when not found
    std::vector<std::string> looked_in;  // the places tried, for the warning
};

// `env`: HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME and HOME, where set.
TokenizerLookup find_tokenizer(const nlohmann::json& args, const std::map<std::string, std::string>& env);

// The tokenizer files of `folder` that a Hugging Face folder carries (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, vocabularies, merges, sentencepiece models, chat templates), as paths.
std::vector<std::string> tokenizer_files(const std::string& folder);

// The environment variables find_tokenizer reads, from this process.
std::map<std::string, std::string> tokenizer_environment();

}  // namespace m2h::hub
