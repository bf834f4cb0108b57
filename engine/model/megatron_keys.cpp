#include "model/megatron_keys.hpp"

#include <charconv>
#include <tuple>

#include "common/error.hpp"

namespace m2h::model {
namespace {

constexpr std::string_view kLayers = "decoder.layers.";

// The local layer spec names its norms as separate modules; TransformerEngine's names (fused into the next linear
// layer) are the ones the family tables use, and the ones torch_dist stores for both specs.
std::string_view canonical_suffix(std::string_view suffix) {
    if (suffix == "input_layernorm.weight") return "self_attention.linear_qkv.layer_norm_weight";
    if (suffix == "pre_mlp_layernorm.weight") return "mlp.linear_fc1.layer_norm_weight";
    if (suffix == "input_layernorm.bias") return "self_attention.linear_qkv.layer_norm_bias";
    if (suffix == "pre_mlp_layernorm.bias") return "mlp.linear_fc1.layer_norm_bias";
    return suffix;
}

std::optional<std::uint64_t> index_number(std::string_view digits) {
    std::uint64_t n = 0;
    if (digits.empty()) return std::nullopt;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    return n;
}

// The spellings of a routed expert's tensor: SequentialMLP's local_experts.J.linear_fc1.weight and TEGroupedMLP's
// linear_fc1.weightJ (legacy files); torch_dist's experts.linear_fc1.weight with an expert axis, or
// experts.N.linear_fc1.weight (singleton local shards). The suffix after the expert, where its index is, the index.
std::optional<std::tuple<std::string, ExpertIndex, std::uint64_t>> expert_suffix(std::string_view suffix) {
    constexpr std::string_view experts = "mlp.experts.";
    if (!suffix.starts_with(experts)) return std::nullopt;
    auto rest = suffix.substr(experts.size());
    const auto numbered = [](std::string_view r) -> std::optional<std::pair<std::uint64_t, std::string_view>> {
        const auto dot = r.find('.');
        if (dot == std::string_view::npos) return std::nullopt;
        if (auto n = index_number(r.substr(0, dot))) return std::pair{*n, r.substr(dot + 1)};
        return std::nullopt;
    };
    if (rest.starts_with("experts.")) {
        rest.remove_prefix(8);
        if (auto n = numbered(rest)) return std::tuple{std::string(n->second), ExpertIndex::Global, n->first};
        return std::tuple{std::string(rest), ExpertIndex::Axis, 0};
    }
    if (rest.starts_with("local_experts.")) {
        if (auto n = numbered(rest.substr(14))) return std::tuple{std::string(n->second), ExpertIndex::Local, n->first};
        return std::nullopt;
    }
    const auto digits = rest.find_last_not_of("0123456789") + 1;
    const auto j = index_number(rest.substr(digits));
    if (!j) return std::nullopt;
    return std::tuple{std::string(rest.substr(0, digits)), ExpertIndex::Local, *j};
}

}  // namespace

std::string LayerRole::key(std::int64_t layer, std::uint64_t expert_index) const {
    return with_layer(std::string(kLayerPrefix) + suffix, static_cast<std::uint64_t>(layer), expert_index);
}

std::optional<LayerRole> layer_role(const ModelSpec& s, std::string_view suffix) {
    LayerRole role;
    if (auto e = expert_suffix(suffix)) {
        role.suffix = "mlp.experts.*." + std::get<0>(*e);
        role.expert = std::get<1>(*e);
        role.expert_index = std::get<2>(*e);
    } else {
        role.suffix = std::string(canonical_suffix(suffix));
    }
    const auto* rule = rule_for(family_of(s.arch), std::string(kLayerPrefix) + role.suffix);
    if (!rule) return std::nullopt;
    role.split = rule->split;
    return role;
}

std::optional<std::pair<std::string, Split>> global_key(const ModelSpec& s, std::string_view key) {
    if (key == "decoder.final_norm.weight") key = "decoder.final_layernorm.weight";
    if (key == "decoder.final_norm.bias") key = "decoder.final_layernorm.bias";
    const auto* rule = key.starts_with(kLayerPrefix) ? nullptr : rule_for(family_of(s.arch), key);
    if (!rule) return std::nullopt;
    return std::pair{std::string(key), rule->split};
}

std::optional<LayerKey> split_layer_key(std::string_view key) {
    if (!key.starts_with(kLayers)) return std::nullopt;
    auto rest = key.substr(kLayers.size());
    const auto dot = rest.find('.');
    std::int64_t n = 0;
    if (dot != std::string_view::npos && dot > 0) {
        const auto [end, ec] = std::from_chars(rest.data(), rest.data() + dot, n);
        if (ec == std::errc() && end == rest.data() + dot) return LayerKey{n, rest.substr(dot + 1)};
    }
    return LayerKey{std::nullopt, rest};
}

std::vector<std::uint64_t> expected_shape(const ModelSpec& s, std::string_view key) {
    // "decoder.layers.3.mlp.experts.5.linear_fc1.weight" -> "decoder.layers.*.mlp.experts.*.linear_fc1.weight"
    std::string pattern(key);
    if (auto lk = split_layer_key(key)) {
        std::string suffix(lk->suffix);
        constexpr std::string_view experts = "mlp.experts.";
        if (const auto dot = suffix.find('.', experts.size());
            suffix.starts_with(experts) && dot != std::string::npos && index_number(std::string_view(suffix).substr(experts.size(), dot - experts.size())))
            suffix.replace(experts.size(), dot - experts.size(), "*");
        pattern = std::string(kLayerPrefix) + suffix;
    }
    const auto* rule = rule_for(family_of(s.arch), pattern);
    if (!rule) throw Error(std::string(key), "no tensor of the " + std::string(family_of(s.arch).name) + " family");
    return megatron_shape(*rule, s);
}

}  // namespace m2h::model
