#pragma once
// The model as the converter needs it, decided from the saved Megatron args: sizes, parallel layout,
// optional tensors, and the Hugging Face architecture. Pure; rejects what it cannot map faithfully.
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/dtype.hpp"

namespace m2h::model {

enum class Arch { Llama, Mistral, Qwen2, Qwen3, OpenSci, GptNeoX, Mixtral, Qwen2Moe, Qwen3Moe };
enum class Norm { RMSNorm, LayerNorm };
// SwiGLU (swiglu), plain GeLU (Megatron's default activation without swiglu), or another activation.
enum class Activation { SwiGLU, GeLU, Other };
std::string_view arch_name(Arch a);

// Mixture of experts on every layer (megatron-core's MoELayer): a router, routed experts spread over the
// expert-parallel ranks, optionally one shared expert with a sigmoid gate.
struct Moe {
    std::uint64_t num_experts = 0;  // 0: a dense model
    std::uint64_t topk = 0;
    std::uint64_t ffn_hidden_size = 0;         // moe_ffn_hidden_size, per expert
    std::uint64_t shared_ffn_hidden_size = 0;  // moe_shared_expert_intermediate_size; 0: no shared expert
    bool shared_expert_gate = false;
    bool pre_softmax = false;  // softmax over all experts before the top-k: the k probabilities are not renormalised
    int ep = 1;   // expert_model_parallel_size
    int etp = 1;  // expert_tensor_parallel_size: how many ranks share one expert's fc1/fc2
    std::uint64_t local_experts() const { return num_experts / static_cast<std::uint64_t>(ep); }
    bool operator==(const Moe&) const = default;
};

struct ModelSpec {
    Arch arch = Arch::Llama;
    std::uint64_t num_layers = 0;
    std::uint64_t hidden_size = 0;
    std::uint64_t num_heads = 0;
    std::uint64_t num_query_groups = 0;  // effective KV heads
    std::uint64_t head_dim = 0;
    std::uint64_t ffn_hidden_size = 0;
    std::uint64_t padded_vocab_size = 0;
    int tp = 1;
    int pp = 1;
    int vpp = 1;
    Norm norm = Norm::RMSNorm;
    Activation activation = Activation::SwiGLU;
    double rotary_percent = 1.0;  // the share of each head's dims that RoPE rotates
    std::optional<std::uint64_t> window;  // sliding-window attention: keys up to `window` positions back
    bool qk_layernorm = false;
    bool linear_bias = false;   // add_bias_linear: biases on qkv, proj, fc1, fc2
    bool qkv_bias = false;      // add_qkv_bias or add_bias_linear: biases on the fused QKV
    bool tied_embeddings = true;
    DType params_dtype = DType::F32;
    Moe moe;
    bool even_pipeline = true;  // no uneven-pipeline args: layer offsets must follow the even formula
    bool is_moe() const { return moe.num_experts > 0; }
    std::uint64_t heads_per_group() const { return num_heads / num_query_groups; }
    std::uint64_t qkv_rows() const { return (num_heads + 2 * num_query_groups) * head_dim; }
    bool operator==(const ModelSpec&) const = default;  // two iterations with equal specs map their tensors alike
};

struct ModelOptions {
    std::string arch = "auto";                       // auto or a family's name (llama, qwen2, ...)
    std::optional<std::uint64_t> num_key_value_heads; // override of the KV-head rule
};

// Throws m2h::Error (where = `source`, the file the args came from) naming the unsupported feature.
ModelSpec model_spec_from_args(const nlohmann::json& args, const ModelOptions& options, const std::string& source);

}  // namespace m2h::model
