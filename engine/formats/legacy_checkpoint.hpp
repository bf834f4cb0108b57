#pragma once
// Megatron's legacy `--ckpt-format torch`: one model_optim_rng.pt per (TP, PP) rank, in mp_rank_TT[_PPP]/.
#include <string>
#include <vector>

#include "plan/source_index.hpp"

namespace m2h::formats {

struct LegacyRankFile {
    std::string path;  // .../mp_rank_01_002/model_optim_rng.pt
    int tp = 0;
    int pp = 0;
};

// The rank files of an iteration folder, ordered by (pp, tp). Throws for expert-parallel folders and for
// an mp_rank folder without its model_optim_rng.pt.
std::vector<LegacyRankFile> list_legacy_rank_files(const std::string& iteration_dir);

// Indexes one rank file: its args, iteration and every model tensor (file offset, dtype, shape), reading only
// the zip directory, data.pkl and local headers, never tensor bytes. `file_index` is stored in each tensor.
plan::SourceIndex index_legacy_rank_file(const LegacyRankFile& file, std::uint32_t file_index);

// Joins per-file indexes (files in list order) and checks they describe one checkpoint: the TP x PP grid is
// complete and the model args agree.
plan::SourceIndex merge_legacy_indexes(const std::vector<LegacyRankFile>& files, std::vector<plan::SourceIndex> parts);

}  // namespace m2h::formats
