#pragma once
// One function per family file; model/family.cpp lists them.
#include "model/family.hpp"

namespace m2h::model {

const Family& llama_family();
const Family& mistral_family();
const Family& qwen2_family();
const Family& qwen3_family();
const Family& opensci_family();
const Family& gptneox_family();
const Family& mixtral_family();
const Family& qwen2_moe_family();
const Family& qwen3_moe_family();

}  // namespace m2h::model
