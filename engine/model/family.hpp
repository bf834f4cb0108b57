#pragma once
// A model family as data: the Megatron tensors it has, how tensor parallelism cuts each, the Hugging Face tensors
// they become and how, in the order of the HF model's state dict; and the family's config.json fields. The
// transforms are few and generic (tensor_mapping.cpp applies them); the tables live in model/families/.
#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model_spec.hpp"

namespace m2h::model {

// How tensor parallelism cuts the Megatron tensor: not at all, along rows, along columns, or as a SwiGLU fc1
// whose every shard holds [gate_r; up_r].
enum class Split { Replicated, Dim0, Dim1, Gated };

// One dimension of a global Megatron tensor. None ends a 1-D shape. Expert and shared-expert sizes are the MoE
// ones (moe_ffn_hidden_size, moe_shared_expert_intermediate_size); One is the shared-expert gate's single row.
enum class Extent {
    None, Vocab, Hidden, Qkv, AttentionOut, HeadDim, Ffn, GatedFfn,
    Experts, ExpertFfn, GatedExpertFfn, SharedFfn, GatedSharedFfn, One
};

// Which part of the Megatron tensor the HF tensor is: all of it, its first vocabulary rows, the q, k or v heads
// of a fused QKV (per query group), or the gate or up half of a SwiGLU fc1.
enum class Transform { Whole, VocabRows, Query, Key, Value, Gate, Up };

// The capability of the model an entry needs.
enum class When { Always, LinearBias, QkvBias, QkLayernorm, Untied };

struct TensorRule {
    // TransformerEngine names; "decoder.layers.*." for per-layer tensors, "mlp.experts.*." for each routed expert
    // (global expert index), which the readers make of local_experts.J, linear_fc1.weightJ and DCP expert axes.
    std::string_view megatron;
    Split split = Split::Replicated;
    std::array<Extent, 2> shape{};
    std::string_view hf;  // "model.layers.*.self_attn.q_proj.weight", "model.layers.*.mlp.experts.*.up_proj.weight"
    Transform transform = Transform::Whole;
    When when = When::Always;
};

struct Family {
    Arch arch;
    std::string_view name;
    std::span<const TensorRule> rules;                           // in HF state-dict order
    void (*config)(const ModelSpec& spec, nlohmann::json& config);  // the family's own config.json fields
    // Why the family cannot represent this model (its HF class has no such tensors or options), or empty.
    std::string (*refuses)(const ModelSpec& spec);
};

const Family& family_of(Arch arch);
// Every family, in the order --arch auto tries them.
std::span<const Family* const> families();

constexpr std::string_view kLayerPrefix = "decoder.layers.*.";

// One HF tensor of this model: its rule, the global Megatron tensor it comes from, its name and shape (the
// vocabulary rows before any --vocab-size trim).
struct HfTensor {
    const TensorRule* rule = nullptr;
    std::string megatron;  // "decoder.layers.3.mlp.experts.5.linear_fc1.weight"
    std::string hf;        // "model.layers.3.mlp.experts.5.gate_proj.weight"
    std::vector<std::uint64_t> shape;
};
// The family's table expanded over the model's layers and experts, in the HF state dict's order.
std::vector<HfTensor> hf_tensors(const Family& family, const ModelSpec& spec);

bool applies(When when, const ModelSpec& spec);
// The global shape of the rule's Megatron tensor for this model.
std::vector<std::uint64_t> megatron_shape(const TensorRule& rule, const ModelSpec& spec);
// The first rule reading `key` ("decoder.layers.*.<suffix>" for layer tensors), or nullptr.
const TensorRule* rule_for(const Family& family, std::string_view key);
// `pattern` with its first '*' replaced by the layer index and its second by the expert index.
std::string with_layer(std::string_view pattern, std::uint64_t layer, std::uint64_t expert = 0);
bool per_expert(const TensorRule& rule);

// Tables are put together from blocks (families/gpt_blocks.hpp): a family that differs by a block is one line.
template <std::size_t... N>
constexpr auto concat(const std::array<TensorRule, N>&... parts) {
    std::array<TensorRule, (N + ...)> out{};
    std::size_t at = 0;
    ((std::copy(parts.begin(), parts.end(), out.begin() + static_cast<std::ptrdiff_t>(at)), at += N), ...);
    return out;
}

}  // namespace m2h::model
