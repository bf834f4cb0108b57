#pragma once
// How a stored Megatron key names a tensor of the family's table: TransformerEngine and local-spec names, per-layer
// and stacked (torch_dist) layer keys, and the spellings of a routed expert's tensors in both formats. Pure.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/family.hpp"

namespace m2h::model {

// Where a routed expert's index is: in the key as the file's local index (legacy files), in the key as the global
// index (torch_dist saved with singleton local shards), or an axis of the tensor (torch_dist).
enum class ExpertIndex { None, Local, Global, Axis };

// What a stored layer key is in the family's terms: the rule's suffix ("mlp.experts.*.linear_fc1.weight" for a
// routed expert's tensor), how TP cuts it, and where the expert index is.
struct LayerRole {
    std::string suffix;
    Split split = Split::Replicated;
    ExpertIndex expert = ExpertIndex::None;
    std::uint64_t expert_index = 0;  // Local or Global
    std::string key(std::int64_t layer, std::uint64_t expert_index) const;
};

// "decoder.layers.<n>.<suffix>" -> (n, suffix); n is absent for torch_dist's stacked keys.
struct LayerKey {
    std::optional<std::int64_t> layer;
    std::string_view suffix;
};

std::optional<LayerKey> split_layer_key(std::string_view key);

// The role of a layer key's suffix, or nullopt when the family has no such tensor.
std::optional<LayerRole> layer_role(const ModelSpec& s, std::string_view suffix);

// A key outside the layers (embedding, final norm, output layer) and how TP cuts it, or nullopt.
std::optional<std::pair<std::string, Split>> global_key(const ModelSpec& s, std::string_view key);

// The global shape the args imply for a canonical key ("decoder.layers.3.mlp.experts.5.linear_fc1.weight");
// throws m2h::Error for a key the family does not have.
std::vector<std::uint64_t> expected_shape(const ModelSpec& s, std::string_view key);

}  // namespace m2h::model
