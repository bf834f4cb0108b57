#include "model/family.hpp"

#include "model/families/families.hpp"

namespace m2h::model {

std::span<const Family* const> families() {
    static const std::array<const Family*, 9> all{&llama_family(),   &mistral_family(),  &qwen2_family(),
                                                  &qwen3_family(),   &opensci_family(),  &gptneox_family(),
                                                  &mixtral_family(), &qwen2_moe_family(), &qwen3_moe_family()};
    return all;
}

const Family& family_of(Arch arch) {
    for (const auto* f : families())
        if (f->arch == arch) return *f;
    return llama_family();
}

bool applies(When when, const ModelSpec& s) {
    switch (when) {
        case When::Always: return true;
        case When::LinearBias: return s.linear_bias;
        case When::QkvBias: return s.qkv_bias;
        case When::QkLayernorm: return s.qk_layernorm;
        case When::Untied: return !s.tied_embeddings;
    }
    return false;
}

std::vector<std::uint64_t> megatron_shape(const TensorRule& rule, const ModelSpec& s) {
    std::vector<std::uint64_t> shape;
    for (const Extent e : rule.shape) {
        switch (e) {
            case Extent::None: return shape;
            case Extent::Vocab: shape.push_back(s.padded_vocab_size); break;
            case Extent::Hidden: shape.push_back(s.hidden_size); break;
            case Extent::Qkv: shape.push_back(s.qkv_rows()); break;
            case Extent::AttentionOut: shape.push_back(s.num_heads * s.head_dim); break;
            case Extent::HeadDim: shape.push_back(s.head_dim); break;
            case Extent::Ffn: shape.push_back(s.ffn_hidden_size); break;
            case Extent::GatedFfn: shape.push_back(2 * s.ffn_hidden_size); break;
            case Extent::Experts: shape.push_back(s.moe.num_experts); break;
            case Extent::ExpertFfn: shape.push_back(s.moe.ffn_hidden_size); break;
            case Extent::GatedExpertFfn: shape.push_back(2 * s.moe.ffn_hidden_size); break;
            case Extent::SharedFfn: shape.push_back(s.moe.shared_ffn_hidden_size); break;
            case Extent::GatedSharedFfn: shape.push_back(2 * s.moe.shared_ffn_hidden_size); break;
            case Extent::One: shape.push_back(1); break;
        }
    }
    return shape;
}

const TensorRule* rule_for(const Family& family, std::string_view key) {
    for (const auto& rule : family.rules)
        if (rule.megatron == key) return &rule;
    return nullptr;
}

std::string with_layer(std::string_view pattern, std::uint64_t layer, std::uint64_t expert) {
    std::string out(pattern);
    if (const auto star = out.find('*'); star != std::string::npos) out.replace(star, 1, std::to_string(layer));
    if (const auto star = out.find('*'); star != std::string::npos) out.replace(star, 1, std::to_string(expert));
    return out;
}

bool per_expert(const TensorRule& rule) { return std::count(rule.megatron.begin(), rule.megatron.end(), '*') == 2; }

namespace {

// The HF tensor's shape: the Megatron tensor's, with the rows the transform takes.
std::vector<std::uint64_t> hf_shape(const TensorRule& rule, const ModelSpec& s) {
    auto shape = megatron_shape(rule, s);
    switch (rule.transform) {
        case Transform::Query: shape[0] = s.num_heads * s.head_dim; break;
        case Transform::Key:
        case Transform::Value: shape[0] = s.num_query_groups * s.head_dim; break;
        case Transform::Gate:
        case Transform::Up: shape[0] /= 2; break;
        case Transform::Whole:
        case Transform::VocabRows: break;
    }
    return shape;
}

void add(std::vector<HfTensor>& out, const TensorRule& rule, const ModelSpec& s, std::uint64_t layer, std::uint64_t expert) {
    if (applies(rule.when, s))
        out.push_back({&rule, with_layer(rule.megatron, layer, expert), with_layer(rule.hf, layer, expert), hf_shape(rule, s)});
}

}  // namespace

// A run of per-layer rules is written once per layer, and inside it a run of per-expert rules once per expert.
std::vector<HfTensor> hf_tensors(const Family& family, const ModelSpec& s) {
    std::vector<HfTensor> out;
    const auto rules = family.rules;
    const auto in_layer = [](const TensorRule& r) { return r.megatron.starts_with(kLayerPrefix); };
    for (std::size_t i = 0; i < rules.size();) {
        if (!in_layer(rules[i])) {
            add(out, rules[i++], s, 0, 0);
            continue;
        }
        std::size_t end = i;
        while (end < rules.size() && in_layer(rules[end])) ++end;
        for (std::uint64_t layer = 0; layer < s.num_layers; ++layer)
            for (std::size_t r = i; r < end;) {
                if (!per_expert(rules[r])) {
                    add(out, rules[r++], s, layer, 0);
                    continue;
                }
                std::size_t experts_end = r;
                while (experts_end < end && per_expert(rules[experts_end])) ++experts_end;
                for (std::uint64_t e = 0; e < s.moe.num_experts; ++e)
                    for (std::size_t x = r; x < experts_end; ++x) add(out, rules[x], s, layer, e);
                r = experts_end;
            }
        i = end;
    }
    return out;
}

}  // namespace m2h::model
