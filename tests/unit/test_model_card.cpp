// The model card: the template's marks, and the fields a checkpoint's args give (samples and tokens seen, the
// learning-rate schedule, the data).
#include <gtest/gtest.h>

#include "hub/card_fields.hpp"
#include "hub/model_card.hpp"

using namespace m2h::hub;
using nlohmann::json;

TEST(ModelCard, FieldsSectionsAndLinesWithoutValues) {
    const auto card = render_card("a: {{a}}\nb: {{b}} and {{a}}\n{{#c}}\nC {{c}}\n{{/c}}\n{{^c}}\nno C\n{{/c}}\ny: {{a|yaml}}\n{{other stuff}}",
                                  {{"a", "x\"y"}, {"c", ""}});
    EXPECT_EQ(card.text, "a: x\"y\nno C\ny: \"x\\\"y\"\n{{other stuff}}");
    EXPECT_EQ(card.missing, (std::vector<std::string>{"b", "c"}));
}

TEST(ModelCard, DefaultTemplateDropsWhatIsUnknown) {
    const auto card = render_card(default_card_template(), {{"model_name", "m"}, {"model_type", "llama"}, {"iteration", "5"}});
    EXPECT_EQ(card.text.rfind("---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n", 0), 0u) << card.text;
    EXPECT_NE(card.text.find("| iteration | 5 |"), std::string::npos);
    EXPECT_EQ(card.text.find("base_model"), std::string::npos);
    EXPECT_EQ(card.text.find("## Data"), std::string::npos);
    EXPECT_EQ(card.text.find("{{"), std::string::npos);
}

TEST(CardFields, SamplesAndTokensSeen) {
    CardSource s;
    s.iteration = 300;
    s.args = {{"consumed_train_samples", 19200}, {"global_batch_size", 64}, {"seq_length", 4096}};
    auto f = card_fields(s);
    EXPECT_EQ(f["samples_seen"], "19,200 (19.2K)");
    EXPECT_EQ(f["tokens_seen"], "78,643,200 (78.6M)");
    EXPECT_EQ(f["tokens_seen_from"], "consumed_train_samples in the checkpoint's args × seq_length");
    s.args.erase("consumed_train_samples");  // older args: from the batch size
    s.args["rampup_batch_size"] = json::array({"16", "16", "1000"});
    f = card_fields(s);
    EXPECT_EQ(f["samples_seen"], "19,200 (19.2K)");
    EXPECT_NE(f["tokens_seen_from"].find("global_batch_size × iteration, which overcounts"), std::string::npos);
    s.args.erase("seq_length");
    EXPECT_EQ(card_fields(s).count("tokens_seen"), 0u);
}

TEST(CardFields, LearningRateSchedules) {
    CardSource s;
    s.args = {{"lr", 3e-4}, {"min_lr", 3e-5}, {"lr_decay_style", "cosine"}, {"lr_decay_iters", 9000},
              {"lr_warmup_iters", 100}, {"train_iters", 10000}};
    EXPECT_EQ(card_fields(s)["lr_schedule"], "cosine decay from 0.0003 to 3e-05 over 9000 iterations, after 100 warm-up iterations");
    s.args = {{"lr", 1e-3}, {"lr_decay_style", "WSD"}, {"lr_wsd_decay_style", "linear"}, {"lr_wsd_decay_samples", 500000},
              {"lr_warmup_fraction", 0.01}};
    EXPECT_EQ(card_fields(s)["lr_schedule"],
              "warmup-stable-decay from 0.001 to 0.0, linear decay over the last 500000 samples, the first 1.0% of them warm-up");
    s.args = {{"lr", 2e-4}, {"lr_decay_style", "constant"}};
    EXPECT_EQ(card_fields(s)["lr_schedule"], "constant at 0.0002");
    s.args = {{"lr", 2e-4}};
    EXPECT_EQ(card_fields(s)["lr_schedule"], "");
}

TEST(CardFields, DataPaths) {
    CardSource s;
    s.args = {{"data_path", {"0.7", "/data/web_text_document", "3e-1", "/data/code_text_document"}}};
    EXPECT_EQ(card_fields(s)["data"], "- `/data/web_text_document` (weight 0.7)\n- `/data/code_text_document` (weight 3e-1)");
    s.args = {{"data_path", {"/data/a", "/data/b"}}, {"valid_data_path", {"/data/v"}}};
    EXPECT_EQ(card_fields(s)["data"], "- `/data/a`\n- `/data/b`\n- validation: `/data/v`");
    s.args = {{"data_path", nullptr}, {"mock_data", true}};
    EXPECT_EQ(card_fields(s)["data"], "- mock data (no dataset)");
}

TEST(CardFields, Counts) {
    EXPECT_EQ(count_text(999), "999");
    EXPECT_EQ(count_text(1'234'567'890'123), "1,234,567,890,123 (1.23T)");
    EXPECT_EQ(short_count(7'000'000'000), "7B");
}
