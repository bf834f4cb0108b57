#include "hub/special_tokens.hpp"

#include <nlohmann/json.hpp>

namespace m2h::hub {

namespace {

using nlohmann::json;

json parse(const std::string& text) {
    if (text.empty()) return json::object();
    auto j = json::parse(text, nullptr, false);
    return j.is_object() ? j : json::object();
}

// A special token is written as its string or as an AddedToken object ({"content": ...}).
std::optional<std::string> token_string(const json& file, const char* name) {
    const auto it = file.find(name);
    if (it == file.end()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
    return std::nullopt;
}

std::optional<std::uint64_t> id_in_vocab(const json& vocab, const std::string& token) {
    if (vocab.is_object()) {  // BPE, WordPiece, WordLevel: token -> id
        const auto it = vocab.find(token);
        if (it != vocab.end() && it->is_number_unsigned()) return it->get<std::uint64_t>();
    } else if (vocab.is_array()) {  // Unigram: [token, score] at its id
        for (std::size_t i = 0; i < vocab.size(); ++i)
            if (vocab[i].is_array() && !vocab[i].empty() && vocab[i][0] == token) return i;
    }
    return std::nullopt;
}

std::optional<std::uint64_t> token_id(const json& config, const json& tokenizer, const json& vocab, const std::string& token) {
    if (const auto it = config.find("added_tokens_decoder"); it != config.end() && it->is_object())
        for (const auto& [id, added] : it->items())
            if (added.is_object() && added.value("content", json()) == token && !id.empty() &&
                id.find_first_not_of("0123456789") == std::string::npos && id.size() < 20)
                return std::stoull(id);
    if (const auto it = tokenizer.find("added_tokens"); it != tokenizer.end() && it->is_array())
        for (const auto& added : *it)
            if (added.is_object() && added.value("content", json()) == token && added.contains("id") &&
                added["id"].is_number_unsigned())
                return added["id"].get<std::uint64_t>();
    if (const auto model = tokenizer.find("model"); model != tokenizer.end() && model->is_object() && model->contains("vocab"))
        if (const auto id = id_in_vocab((*model)["vocab"], token)) return id;
    return id_in_vocab(vocab, token);
}

}  // namespace

SpecialTokenIds special_token_ids(const TokenizerTexts& texts) {
    const auto config = parse(texts.tokenizer_config), map = parse(texts.special_tokens_map);
    const auto tokenizer = parse(texts.tokenizer), vocab = parse(texts.vocab);
    const auto id_of = [&](const char* name) -> std::optional<std::uint64_t> {
        auto token = token_string(config, name);
        if (!token) token = token_string(map, name);
        return token ? token_id(config, tokenizer, vocab, *token) : std::nullopt;
    };
    return {id_of("bos_token"), id_of("eos_token"), id_of("pad_token")};
}

}  // namespace m2h::hub
