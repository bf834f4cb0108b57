// Special-token ids from a tokenizer's files, the way transformers resolves them: the token string from
// tokenizer_config.json (or special_tokens_map.json), its id from the added tokens or the vocabulary.
#include <gtest/gtest.h>

#include "hub/generation_config.hpp"
#include "hub/special_tokens.hpp"

using namespace m2h::hub;

TEST(SpecialTokens, FromAddedTokensDecoderAndAddedTokens) {
    TokenizerTexts t;
    t.tokenizer_config = R"({"bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false},
                             "added_tokens_decoder": {"5": {"content": "<s>"}, "6": {"content": "</s>"}}})";
    t.tokenizer = R"({"added_tokens": [{"id": 9, "content": "<pad>"}], "model": {"vocab": {"a": 0}}})";
    t.special_tokens_map = R"({"pad_token": "<pad>"})";
    const auto ids = special_token_ids(t);
    EXPECT_EQ(ids.bos, 5u);
    EXPECT_EQ(ids.eos, 6u);
    EXPECT_EQ(ids.pad, 9u);  // named only by special_tokens_map.json
}

TEST(SpecialTokens, FromTheVocabulary) {
    TokenizerTexts t;
    t.special_tokens_map = R"({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})";
    t.tokenizer = R"({"model": {"type": "BPE", "vocab": {"x": 0, "<|endoftext|>": 50256}}})";
    auto ids = special_token_ids(t);
    EXPECT_EQ(ids.bos, 50256u);
    EXPECT_EQ(ids.eos, 50256u);
    EXPECT_FALSE(ids.pad);
    // A Unigram vocabulary is a list of [token, score] at each id; vocab.json stands in without tokenizer.json.
    t.tokenizer = R"({"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["<|endoftext|>", 0.0]]}})";
    EXPECT_EQ(special_token_ids(t).eos, 1u);
    t.tokenizer.clear();
    t.vocab = R"({"<|endoftext|>": 7})";
    EXPECT_EQ(special_token_ids(t).eos, 7u);
}

TEST(SpecialTokens, UnknownOrDamagedStaysUnknown) {
    TokenizerTexts t;
    EXPECT_FALSE(special_token_ids(t).any());
    t.tokenizer_config = "{not json";
    t.tokenizer = R"({"added_tokens": "nonsense"})";
    EXPECT_FALSE(special_token_ids(t).any());
    t.tokenizer_config = R"({"bos_token": "<s>", "added_tokens_decoder": {"-1": {"content": "<s>"}}})";
    EXPECT_FALSE(special_token_ids(t).bos);  // a token named but with no id
    t.tokenizer_config = R"({"bos_token": null, "eos_token": 3})";
    EXPECT_FALSE(special_token_ids(t).any());
}

TEST(GenerationConfig, TheConfigsTokenIdsAndNothingElse) {
    const auto g = generation_config({{"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", nullptr},
                                      {"hidden_size", 64}, {"transformers_version", "4.49.0"}});
    EXPECT_EQ(g.dump(), R"({"_from_model_config":true,"bos_token_id":1,"eos_token_id":2,"transformers_version":"4.49.0"})");
    EXPECT_EQ(generation_config({{"transformers_version", "4.49.0"}}).size(), 2u);
}
