#pragma once
// Megatron's legacy `--ckpt-format torch`: one model_optim_rng.pt per (TP, PP, EP) rank, in mp_rank_TT[_PPP][_EEE]/.
#include <string>
#include <vector>

#include "tensors/source_index.hpp"

namespace m2h::formats {

struct LegacyRankFile {
    std::string path;  // .../mp_rank_01_002/model_optim_rng.pt
    int tp = 0;
    int pp = 0;
    int ep = 0;
    // How many numbers the folder name has: with PP 1 and EP > 1, Megatron names a rank mp_rank_TT_EEE, which only
    // the args tell apart from mp_rank_TT_PPP (merge_legacy_indexes decides).
    int numbers = 1;
};

// The rank files of an iteration folder, ordered by (pp, tp, ep). Throws for an mp_rank folder without its
// model_optim_rng.pt and for one rank named twice.
std::vector<LegacyRankFile> list_legacy_rank_files(const std::string& iteration_dir);

// Indexes one rank file: its args, iteration and every model tensor (file offset, dtype, shape), reading only
// the zip directory, data.pkl and local headers, never tensor bytes. `file_index` is stored in each tensor.
tensors::SourceIndex index_legacy_rank_file(const LegacyRankFile& file, std::uint32_t file_index);

// Joins per-file indexes (files in list order) and checks they describe one checkpoint: the TP x PP x EP grid is
// complete and the model args agree. Reads the second number of a two-number folder name as the EP rank when the
// args say PP 1 and EP > 1.
tensors::SourceIndex merge_legacy_indexes(std::vector<LegacyRankFile> files, std::vector<tensors::SourceIndex> parts);

}  // namespace m2h::formats
