#pragma once
// Pure: a model card (the README.md the Hugging Face Hub shows) rendered from a template and named fields.
//
// The template is Markdown with YAML front matter and these marks:
//   {{name}}        the field's value
//   {{name|yaml}}   the value as a quoted YAML (JSON) string, for front matter
//   {{#name}} ... {{/name}}   on lines of their own: the lines between, only when the field has a value
//   {{^name}} ... {{/name}}   the lines between, only when it has none
// A line with a field that has no value is left out, so a card never says "unknown".
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace m2h::hub {

using CardFields = std::map<std::string, std::string>;

struct RenderedCard {
    std::string text;
    std::vector<std::string> missing;  // fields the template used that had no value (their lines left out)
};

RenderedCard render_card(std::string_view card_template, const CardFields& fields);

// The card every converted folder gets unless --model-card names another.
std::string_view default_card_template();

}  // namespace m2h::hub
