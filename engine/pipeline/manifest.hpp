#pragma once
// The manifest that travels with a converted folder (megatron2hf.manifest.json): where it came from, how it was
// made, and a CRC-32C per tensor computed from the bytes the writer ranks received, so anyone can re-check the
// folder later (`megatron2hf verify DIR`).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan/safetensors_layout.hpp"
#include "plan/transfer_plan.hpp"

namespace m2h::pipeline {

inline constexpr const char* kManifestName = "megatron2hf.manifest.json";

// A stretch of one output tensor held by one window, with the CRC of its bytes.
struct Segment {
    std::uint32_t tensor = 0;
    std::uint64_t offset = 0;  // within the tensor's bytes
    std::uint64_t length = 0;
    std::uint32_t crc = 0;
};

// Pure: the stretches of tensors that `window` covers (CRCs left 0), in file order.
std::vector<Segment> window_segments(const plan::OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors,
                                     const plan::Window& window);
// Per-tensor CRC from all ranks' segments; every byte of every tensor must be covered exactly once.
std::vector<std::uint32_t> tensor_checksums(std::vector<Segment> segments, const std::vector<tensors::OutputTensor>& tensors);

struct Provenance {
    std::string source_path;
    std::int64_t iteration = 0;
    std::string source_format;
    nlohmann::json arguments;
};

nlohmann::json make_manifest(const Provenance& provenance, const plan::OutputLayout& layout,
                             const std::vector<tensors::OutputTensor>& tensors, const std::vector<std::uint32_t>& crcs);

// "21 tensors, 213,632 bytes in 1 file; CRC-32C of the tensors' CRC-32Cs in order: 1a2b3c4d", for the model card.
std::string manifest_summary(const plan::OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors,
                             const std::vector<std::uint32_t>& crcs);

// Re-reads every file listed in DIR's manifest, applies the reference safetensors reader's rules, and checks
// each tensor's dtype, shape and CRC. `only_files`: check just these file names (for splitting the work over
// ranks); empty means all. Throws m2h::Error naming the file and tensor on the first mismatch.
struct VerifyResult {
    std::uint64_t tensors = 0;
    std::uint64_t bytes = 0;
};
VerifyResult verify_output_dir(const std::string& dir, const std::vector<std::string>& only_files = {});

}  // namespace m2h::pipeline
