#pragma once
// The saved Megatron arguments (an argparse.Namespace in the pickle) as a JSON object of plain values, so
// the model spec, config writer and manifest never touch pickle values.
#include <nlohmann/json.hpp>

#include "pickle/value.hpp"

namespace m2h::formats {

// Attributes that are None, bool, int, float, str, dtype (as "bfloat16"), lists or tuples of those; anything
// else becomes a string naming its kind. Throws m2h::Error (where = `source`) if `ns` has no attributes.
nlohmann::json args_to_json(const pickle::Value& ns, const std::string& source);

}  // namespace m2h::formats
