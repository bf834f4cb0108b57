#include "model/model_spec.hpp"

#include <algorithm>

#include "common/error.hpp"
#include "model/family.hpp"

namespace m2h::model {
namespace {

using nlohmann::json;

// Namespace attributes may be absent or None in older or newer Megatron versions.
const json* arg(const json& args, const char* name) {
    auto it = args.find(name);
    if (it == args.end() || it->is_null()) return nullptr;
    return &*it;
}

bool flag(const json& args, const char* name) {
    const json* v = arg(args, name);
    return v && v->is_boolean() && v->get<bool>();
}

std::uint64_t positive(const json& args, const char* name, const std::string& source) {
    const json* v = arg(args, name);
    if (!v || !v->is_number_integer() || v->get<std::int64_t>() <= 0)
        throw Error(source, std::string("args: `") + name + "` is missing or not a positive integer");
    return v->get<std::uint64_t>();
}

std::uint64_t positive_or(const json& args, const char* name, std::uint64_t fallback, const std::string& source) {
    return arg(args, name) ? positive(args, name, source) : fallback;
}

void require(bool ok, const std::string& source, const std::string& what) {
    if (!ok) throw Error(source, "unsupported model: " + what);
}

// moe_layer_freq 1, or a pattern of ones: an MoE block on every layer (the HF MoE classes have no dense layers
// here).
bool moe_on_every_layer(const json* freq) {
    if (!freq) return true;
    if (freq->is_number_integer()) return *freq == 1;
    if (freq->is_array()) return std::all_of(freq->begin(), freq->end(), [](const json& v) { return v == 1; });
    return false;
}

// The router and expert layout, refusing what changes the routing beyond a softmax top-k (HF's MoE classes
// compute exactly that) and what changes the tensors.
Moe moe_from_args(const json& args, int tp, std::uint64_t ffn, const std::string& source) {
    Moe m;
    const json* experts = arg(args, "num_experts");
    if (!experts || *experts == 0) {
        if (const json* v = arg(args, "expert_model_parallel_size"))
            require(*v == 1, source, "expert_model_parallel_size " + v->dump() + " without num_experts");
        return m;
    }
    m.num_experts = positive(args, "num_experts", source);
    m.topk = positive_or(args, "moe_router_topk", 2, source);
    m.ffn_hidden_size = positive_or(args, "moe_ffn_hidden_size", ffn, source);
    if (arg(args, "moe_shared_expert_intermediate_size"))
        m.shared_ffn_hidden_size = positive(args, "moe_shared_expert_intermediate_size", source);
    m.shared_expert_gate = m.shared_ffn_hidden_size > 0 && flag(args, "moe_shared_expert_gate");
    m.pre_softmax = flag(args, "moe_router_pre_softmax");
    m.ep = static_cast<int>(positive_or(args, "expert_model_parallel_size", 1, source));
    m.etp = static_cast<int>(positive_or(args, "expert_tensor_parallel_size", static_cast<std::uint64_t>(tp), source));
    require(m.num_experts % static_cast<std::uint64_t>(m.ep) == 0, source,
            "num_experts " + std::to_string(m.num_experts) + " is not a multiple of expert_model_parallel_size " +
                std::to_string(m.ep));
    require(m.topk <= m.num_experts, source, "moe_router_topk is larger than num_experts");
    require(moe_on_every_layer(arg(args, "moe_layer_freq")), source, "moe_layer_freq (dense layers between MoE layers)");
    if (const json* v = arg(args, "moe_router_score_function"))
        require(*v == "softmax", source, "moe_router_score_function " + v->dump() + " (only softmax routing maps to HF)");
    if (const json* v = arg(args, "moe_router_topk_scaling_factor"))
        require(*v == 1 || *v == 1.0, source, "moe_router_topk_scaling_factor " + v->dump());
    if (const json* v = arg(args, "moe_router_load_balancing_type"))
        require(*v != "sinkhorn", source, "moe_router_load_balancing_type sinkhorn (routing that HF does not compute)");
    require(!flag(args, "moe_router_enable_expert_bias"), source, "moe_router_enable_expert_bias (router expert bias)");
    require(!arg(args, "moe_router_num_groups"), source, "moe_router_num_groups (group-limited routing)");
    require(!flag(args, "moe_apply_probs_on_input"), source, "moe_apply_probs_on_input");
    // A capacity drops tokens at inference too; HF's MoE blocks never do.
    require(!arg(args, "moe_expert_capacity_factor"), source, "moe_expert_capacity_factor (token dropping)");
    require(!arg(args, "moe_latent_size"), source, "moe_latent_size (latent experts)");
    require(!flag(args, "moe_use_legacy_grouped_gemm"), source, "moe_use_legacy_grouped_gemm (GroupedMLP's fused weight1/weight2)");
    return m;
}

// --arch auto: the first family (in families() order) that can represent the model; a name: that family, which
// must be able to.
const Family& choose_family(const ModelSpec& s, const std::string& arch, const std::string& source) {
    std::string names, reasons;
    for (const auto* f : families()) {
        const std::string why = f->refuses(s);
        if (arch == f->name) {
            require(why.empty(), source, why + " (--arch " + arch + ")");
            return *f;
        }
        if (arch == "auto" && why.empty()) return *f;
        names += ", " + std::string(f->name);
        reasons += std::string(reasons.empty() ? "" : "; ") + std::string(f->name) + ": " + why;
    }
    if (arch != "auto")
        throw Error("--arch", "unknown architecture '" + arch + "' (expected auto" + names + ")");
    throw Error(source, "--arch auto: no family can represent this model (" + reasons + ")");
}

}  // namespace

std::string_view arch_name(Arch a) { return family_of(a).name; }

ModelSpec model_spec_from_args(const json& args, const ModelOptions& options, const std::string& source) {
    if (!args.is_object()) throw Error(source, "args are missing from the checkpoint");
    ModelSpec s;
    s.num_layers = positive(args, "num_layers", source);
    s.hidden_size = positive(args, "hidden_size", source);
    s.num_heads = positive(args, "num_attention_heads", source);
    s.num_query_groups =
        flag(args, "group_query_attention") ? positive(args, "num_query_groups", source) : s.num_heads;
    if (options.num_key_value_heads) s.num_query_groups = *options.num_key_value_heads;
    s.head_dim = positive_or(args, "kv_channels", s.hidden_size / s.num_heads, source);
    s.ffn_hidden_size = positive(args, "ffn_hidden_size", source);
    s.padded_vocab_size = positive(args, "padded_vocab_size", source);
    s.tp = static_cast<int>(positive_or(args, "tensor_model_parallel_size", 1, source));
    s.pp = static_cast<int>(positive_or(args, "pipeline_model_parallel_size", 1, source));
    s.vpp = static_cast<int>(positive_or(args, "virtual_pipeline_model_parallel_size", 1, source));
    if (!arg(args, "virtual_pipeline_model_parallel_size") && arg(args, "num_layers_per_virtual_pipeline_stage"))
        s.vpp = static_cast<int>(s.num_layers / s.pp /
                                 positive(args, "num_layers_per_virtual_pipeline_stage", source));

    require(s.num_heads % s.num_query_groups == 0, source,
            "num_attention_heads " + std::to_string(s.num_heads) + " is not a multiple of the " +
                std::to_string(s.num_query_groups) + " query groups");
    if (const json* v = arg(args, "position_embedding_type"))
        require(*v == "rope", source, "position_embedding_type " + v->dump() + " (only rope maps to HF)");
    if (const json* v = arg(args, "normalization")) {
        require(*v == "RMSNorm" || *v == "LayerNorm", source, "normalization " + v->dump());
        s.norm = *v == "LayerNorm" ? Norm::LayerNorm : Norm::RMSNorm;
    }
    s.activation = flag(args, "swiglu") ? Activation::SwiGLU
                   : flag(args, "squared_relu") || flag(args, "openai_gelu") || flag(args, "quick_geglu")
                       ? Activation::Other
                       : Activation::GeLU;
    require(!flag(args, "rotary_interleaved"), source, "rotary_interleaved");
    if (const json* v = arg(args, "rotary_percent")) {
        require(v->is_number() && v->get<double>() > 0 && v->get<double>() <= 1, source, "rotary_percent " + v->dump());
        s.rotary_percent = v->get<double>();
    }
    // The older and the newer (megatron-core 0.19's parser) names of one flag: Megatron then applies (1 + w),
    // which HF norms do not.
    require(!flag(args, "apply_layernorm_1p"), source, "apply_layernorm_1p (zero-centred norm weights)");
    require(!flag(args, "layernorm_zero_centered_gamma"), source,
            "layernorm_zero_centered_gamma (zero-centred norm weights)");
    require(!flag(args, "qk_l2_norm"), source, "qk_l2_norm");
    require(!arg(args, "no_rope_freq"), source, "no_rope_freq (layers without RoPE)");
    if (const json* v = arg(args, "rope_type")) require(*v == "rope", source, "rope_type " + v->dump());
    if (const json* w = arg(args, "window_size")) {
        // Megatron's (left, right) window; a causal model has right 0. Every layer must have it.
        require(w->is_array() && w->size() == 2 && (*w)[0].is_number_integer() && (*w)[0] >= 0 && (*w)[1] == 0, source,
                "window_size " + w->dump() + " (only (N, 0) maps to HF)");
        require(!arg(args, "window_attn_skip_freq"), source, "window_attn_skip_freq (sliding windows on some layers)");
        s.window = (*w)[0].get<std::uint64_t>();
    }
    require(!flag(args, "multi_latent_attention"), source, "multi_latent_attention");
    require(!flag(args, "attention_output_gate"), source, "attention_output_gate");
    if (const json* v = arg(args, "mtp_num_layers")) require(*v == 0, source, "multi-token prediction layers");
    s.moe = moe_from_args(args, s.tp, s.ffn_hidden_size, source);

    s.qk_layernorm = flag(args, "qk_layernorm");
    s.linear_bias = flag(args, "add_bias_linear");
    s.qkv_bias = flag(args, "add_qkv_bias") || s.linear_bias;
    s.tied_embeddings = !flag(args, "untie_embeddings_and_output_weights");
    s.params_dtype = flag(args, "bf16") ? DType::BF16 : flag(args, "fp16") ? DType::F16 : DType::F32;
    for (const char* uneven : {"num_layers_in_first_pipeline_stage", "num_layers_in_last_pipeline_stage",
                               "pipeline_model_parallel_layout", "decoder_first_pipeline_num_layers",
                               "decoder_last_pipeline_num_layers"})
        if (arg(args, uneven)) s.even_pipeline = false;
    if (flag(args, "account_for_embedding_in_pipeline_split") || flag(args, "account_for_loss_in_pipeline_split"))
        s.even_pipeline = false;

    s.arch = choose_family(s, options.arch, source).arch;
    return s;
}

}  // namespace m2h::model
