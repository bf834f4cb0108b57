// Training-log parsing: rank prefixes, the arguments block, save lines (paths with spaces), run description.
#include <gtest/gtest.h>

#include "common/error.hpp"
#include "log_parser.hpp"

using namespace m2h::launch;

namespace {

// Upstream _print_args layout, with torchrun's "[host:rank]:" prefix.
std::string args_block(const std::vector<std::pair<std::string, std::string>>& args, const std::string& prefix = "[lrdn0137:0]:") {
    std::string s = prefix + std::string(24, '-') + " arguments " + std::string(24, '-') + "\n";
    for (const auto& [k, v] : args) s += prefix + "  " + k + " " + std::string(48 - k.size(), '.') + " " + v + "\n";
    s += prefix + std::string(20, '-') + " end of arguments " + std::string(21, '-') + "\n";
    return s;
}

}  // namespace

TEST(LauncherLogParser, StripsRankPrefixes) {
    EXPECT_EQ(strip_rank_prefix("[lrdn0137:0]:Total number"), "Total number");
    EXPECT_EQ(strip_rank_prefix("[lrdn0137:12]:  hidden_size ... 2048"), "  hidden_size ... 2048");
    EXPECT_EQ(strip_rank_prefix("3: iteration 50"), "iteration 50");
    EXPECT_EQ(strip_rank_prefix("no prefix here"), "no prefix here");
    EXPECT_EQ(strip_rank_prefix("[2025-03-31 05:54:07] iteration"), "[2025-03-31 05:54:07] iteration");
    EXPECT_EQ(strip_rank_prefix("[vm:0]:line\r"), "line");
}

TEST(LauncherLogParser, ReadsTheArgumentsBlock) {
    const std::string text = "SLURM_GPUS_PER_NODE:  4\npretrain_gpt.py --num-layers 24\n" +
                             args_block({{"data_path", "['1.0', '/data/x']"},
                                         {"hidden_size", "2048"},
                                         {"num_layers", "24"},
                                         {"save", "/leonardo_work/run/checkpoints"},
                                         {"vocab_file", "None"},
                                         {"wandb_project", ""}}) +
                             "[lrdn0137:0]:  hidden_size ..... 999 (after the block: ignored)\n";
    const auto log = parse_training_log(text);
    ASSERT_TRUE(log.has_args_block);
    EXPECT_EQ(log.args.at("hidden_size"), "2048");
    EXPECT_EQ(log.args.at("num_layers"), "24");
    EXPECT_EQ(log.args.at("data_path"), "['1.0', '/data/x']");
    EXPECT_EQ(log.args.at("save"), "/leonardo_work/run/checkpoints");
    EXPECT_EQ(log.args.at("vocab_file"), "None");
    EXPECT_EQ(log.args.at("wandb_project"), "");
}

TEST(LauncherLogParser, ReadsSaveLinesMarkersAndCounts) {
    const std::string text =
        "[n:0]: > padded vocab (size: 50277) with 27 dummy tokens (new size: 50304)\n"
        "[n:0]:Total number of parameters in billions: 1.71\n"
        "[n:3]: [2025-03-31 05:54:07] iteration       50/  242204 | consumed samples: 50400 | lm loss: 6.25E+00 |\n"
        "[n:0]:saving checkpoint at iteration    2000 to /w/run a/ckpts in torch_dist format\n"
        "[n:0]:  successfully saved checkpoint from iteration    2000 to /w/run a/ckpts [ t 1/1, p 1/1 ]\n"
        "[n:0]:[after training is done] datetime: 2025-03-31 05:54:07 \n"
        "[n:0]:saving checkpoint at iteration   72661 to /w/x in y/ckpts in torch format\n"
        "saving checkpoint at iteration 5 to /old/megatron\n";
    const auto log = parse_training_log(text);
    EXPECT_FALSE(log.has_args_block);
    EXPECT_TRUE(log.finished);
    ASSERT_TRUE(log.total_params_billions);
    EXPECT_DOUBLE_EQ(*log.total_params_billions, 1.71);
    EXPECT_EQ(log.padded_vocab, 50304u);
    ASSERT_EQ(log.saves.size(), 3u);
    EXPECT_EQ(log.saves[0].iteration, 2000);
    EXPECT_EQ(log.saves[0].path, "/w/run a/ckpts");
    EXPECT_EQ(log.saves[0].format, "torch_dist");
    EXPECT_EQ(log.saves[1].iteration, 72661);
    EXPECT_EQ(log.saves[1].path, "/w/x in y/ckpts");  // " in " inside a path is not the format clause
    EXPECT_EQ(log.saves[1].format, "torch");
    EXPECT_EQ(log.saves[2].path, "/old/megatron");  // older Megatron: no format clause
    EXPECT_EQ(log.saves[2].format, "");
}

TEST(LauncherLogParser, DescribeRunPrefersTheLastSaveLine) {
    const std::string text = args_block({{"ckpt_format", "torch_dist"},
                                         {"pipeline_model_parallel_size", "2"},
                                         {"save", "/from/args"},
                                         {"tensor_model_parallel_size", "4"},
                                         {"virtual_pipeline_model_parallel_size", "None"}}) +
                             "[n:0]:saving checkpoint at iteration 100 to /from/save/line in torch format\n";
    const auto run = describe_run(parse_training_log(text), "/logs/a.out");
    EXPECT_EQ(run.checkpoint_root, "/from/save/line");
    EXPECT_EQ(run.root_source, "save line");
    EXPECT_EQ(run.format, "torch");
    EXPECT_EQ(run.tp, 4);
    EXPECT_EQ(run.pp, 2);
    EXPECT_EQ(run.vpp, 1);
}

TEST(LauncherLogParser, DescribeRunFallsBackToTheSaveArgument) {
    const auto run = describe_run(parse_training_log(args_block({{"ckpt_format", "torch_dist"}, {"save", "ckpts/run1"}})),
                                  "/logs/a.out");
    EXPECT_EQ(run.checkpoint_root, "/logs/ckpts/run1");  // relative: against the log's folder
    EXPECT_EQ(run.root_source, "save argument");
    EXPECT_EQ(run.format, "torch_dist");
}

TEST(LauncherLogParser, DescribeRunNamesTheLogWhenThereIsNoRoot) {
    try {
        describe_run(parse_training_log("srun: error: task 0 exited\n"), "/logs/junk.out");
        FAIL() << "no error";
    } catch (const m2h::Error& e) {
        EXPECT_NE(std::string(e.what()).find("/logs/junk.out: not a Megatron training log"), std::string::npos) << e.what();
    }
    EXPECT_THROW(describe_run(parse_training_log(args_block({{"save", "None"}})), "/l.out"), m2h::Error);
}

TEST(LauncherLogParser, ParameterEstimateMatchesThePublishedOpenSci17B) {
    // 1.7B: 24 layers, hidden 2048, SwiGLU FFN 8192, 32 heads, all biases, qk-norm, tied, vocab 50304:
    // 1,714,377,728 parameters (docs/seed-pipeline.md §8).
    const std::string text = args_block({{"add_bias_linear", "True"},
                                         {"bf16", "True"},
                                         {"ffn_hidden_size", "8192"},
                                         {"group_query_attention", "False"},
                                         {"hidden_size", "2048"},
                                         {"kv_channels", "64"},
                                         {"num_attention_heads", "32"},
                                         {"num_layers", "24"},
                                         {"qk_layernorm", "True"},
                                         {"save", "/ckpt"},
                                         {"swiglu", "True"},
                                         {"untie_embeddings_and_output_weights", "False"}}) +
                             "[n:0]: > padded vocab (size: 50277) with 27 dummy tokens (new size: 50304)\n";
    const auto log = parse_training_log(text);
    EXPECT_EQ(estimate_parameters(log), 1'714'377'728u);
    const auto run = describe_run(log, "/l.out");
    EXPECT_EQ(run.model_bytes, 2u * 1'714'377'728u);
}

TEST(LauncherLogParser, ParameterEstimateFallsBackToTheTotalLine) {
    const auto run = describe_run(parse_training_log("[n:0]:Total number of parameters in billions: 0.40\n"
                                                     "[n:0]:saving checkpoint at iteration 1 to /c in torch format\n"),
                                  "/l.out");
    EXPECT_EQ(run.parameters, 400'000'000u);
    EXPECT_EQ(run.model_bytes, 1'600'000'000u);  // no bf16 argument: 4 bytes
}

TEST(LauncherLogParser, ParameterEstimateCountsEveryExpert) {
    // Mixtral-style, 2 layers of hidden 8, 4 heads in 2 groups of head dim 2, 4 experts of FFN 6, untied vocab 32.
    // Per layer: q 64 + k 32 + v 32 + o 64, router 4 x 8, experts 4 x 3 x 6 x 8, two norms of 8: 816.
    // Embedding and output layer 2 x 32 x 8, final norm 8: 2 x 816 + 520 = 2152.
    const auto log = parse_training_log(args_block({{"num_layers", "2"},
                                                    {"hidden_size", "8"},
                                                    {"num_attention_heads", "4"},
                                                    {"group_query_attention", "True"},
                                                    {"num_query_groups", "2"},
                                                    {"kv_channels", "2"},
                                                    {"ffn_hidden_size", "16"},
                                                    {"num_experts", "4"},
                                                    {"moe_ffn_hidden_size", "6"},
                                                    {"moe_router_topk", "2"},
                                                    {"moe_layer_freq", "1"},
                                                    {"window_size", "None"},
                                                    {"swiglu", "True"},
                                                    {"add_bias_linear", "False"},
                                                    {"normalization", "RMSNorm"},
                                                    {"untie_embeddings_and_output_weights", "True"},
                                                    {"padded_vocab_size", "32"},
                                                    {"save", "/ckpt"}}));
    EXPECT_EQ(estimate_parameters(log), 2152u);
    auto sliding = log;
    sliding.args["window_size"] = "(4, 0)";  // as Python prints the tuple: Mixtral with a sliding window
    EXPECT_EQ(estimate_parameters(sliding), 2152u);
    sliding.args["moe_router_score_function"] = "sigmoid";  // routing the engine refuses: no estimate from args
    EXPECT_EQ(estimate_parameters(sliding), std::nullopt);
}
