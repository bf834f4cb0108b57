#pragma once
// Pure: the ids of a Hugging Face tokenizer's bos, eos and pad tokens, from the texts of its files. Which string
// is the bos token comes from tokenizer_config.json (or special_tokens_map.json); its id from the added tokens
// (tokenizer_config.json's added_tokens_decoder, tokenizer.json's added_tokens) or the model's vocabulary.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace m2h::hub {

struct TokenizerTexts {
    std::string tokenizer_config;    // tokenizer_config.json; empty when absent
    std::string special_tokens_map;  // special_tokens_map.json
    std::string tokenizer;           // tokenizer.json
    std::string vocab;               // vocab.json (BPE tokenizers without tokenizer.json)
};

struct SpecialTokenIds {
    std::optional<std::uint64_t> bos, eos, pad;
    bool any() const { return bos || eos || pad; }
};

// Never throws: a file that does not parse counts as absent, a token without an id stays unknown.
SpecialTokenIds special_token_ids(const TokenizerTexts& texts);

}  // namespace m2h::hub
