#include "model/family.hpp"

#include "model/families/families.hpp"

namespace m2h::model {

std::span<const Family* const> families() {
    static const std::array<const Family*, 6> all{&llama_family(), &mistral_family(), &qwen2_family(),
                                                  &qwen3_family(), &opensci_family(), &gptneox_family()};
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
        }
    }
    return shape;
}

const TensorRule* rule_for(const Family& family, std::string_view key) {
    for (const auto& rule : family.rules)
        if (rule.megatron == key) return &rule;
    return nullptr;
}

std::string with_layer(std::string_view pattern, std::uint64_t layer) {
    std::string out(pattern);
    if (const auto star = out.find('*'); star != std::string::npos) out.replace(star, 1, std::to_string(layer));
    return out;
}

}  // namespace m2h::model
