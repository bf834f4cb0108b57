#include "model/hf_config.hpp"

#include "model/family.hpp"

namespace m2h::model {
namespace {

using nlohmann::json;

json arg_or(const json& args, const char* name, json fallback) {
    auto it = args.find(name);
    return it == args.end() || it->is_null() ? std::move(fallback) : *it;
}

const char* torch_dtype_name(DType d) {
    switch (d) {
        case DType::BF16: return "bfloat16";
        case DType::F16: return "float16";
        default: return "float32";
    }
}

// Megatron's llama3 RoPE scaling constants (low/high frequency factors, original context).
json rope_scaling(const json& args) {
    if (!arg_or(args, "use_rope_scaling", false).get<bool>()) return nullptr;
    return {{"rope_type", "llama3"},
            {"factor", arg_or(args, "rope_scaling_factor", 8.0)},
            {"low_freq_factor", 1.0},
            {"high_freq_factor", 4.0},
            {"original_max_position_embeddings", 8192}};
}

}  // namespace

json hf_config(const ModelSpec& s, const json& args, std::uint64_t vocab_size, DType dtype) {
    json c;
    c["_name_or_path"] = "";
    c["attention_dropout"] = arg_or(args, "attention_dropout", 0.0);
    c["head_dim"] = s.head_dim;
    c["hidden_act"] = "silu";
    c["hidden_size"] = s.hidden_size;
    c["initializer_range"] = arg_or(args, "init_method_std", 0.02);
    c["intermediate_size"] = s.ffn_hidden_size;
    // Open-Sci and Megatron-Bridge take the context length from seq_length, not max_position_embeddings.
    c["max_position_embeddings"] = arg_or(args, "seq_length", arg_or(args, "max_position_embeddings", 4096));
    c["num_attention_heads"] = s.num_heads;
    c["num_hidden_layers"] = s.num_layers;
    c["num_key_value_heads"] = s.num_query_groups;
    c["pretraining_tp"] = 1;
    // Megatron's newer parser (megatron.training in megatron-core 0.19) saves it as layernorm_epsilon.
    c["rms_norm_eps"] = arg_or(args, "norm_epsilon", arg_or(args, "layernorm_epsilon", 1e-5));
    c["rope_scaling"] = rope_scaling(args);
    c["rope_theta"] = arg_or(args, "rotary_base", 10000);
    c["tie_word_embeddings"] = s.tied_embeddings;
    c["torch_dtype"] = torch_dtype_name(dtype);
    c["transformers_version"] = "4.49.0";
    c["use_cache"] = true;
    c["vocab_size"] = vocab_size;
    c["attention_bias"] = s.linear_bias;
    c["mlp_bias"] = s.linear_bias;
    family_of(s.arch).config(s, c);
    return c;  // nlohmann's object is ordered by key: dumped sorted, as transformers writes it
}

}  // namespace m2h::model
