#include "hub/model_card.hpp"

namespace m2h::hub {

// The fields are listed in docs/model-card.md; a line whose field has no value is left out.
std::string_view default_card_template() {
    return R"(---
library_name: transformers
pipeline_tag: text-generation
license: {{license|yaml}}
base_model: {{base_model|yaml}}
tags:
- megatron-lm
- megatron2hf
- {{model_type}}
---

# {{model_name}}

A {{parameters}}-parameter {{architecture}} from iteration {{iteration}} of a Megatron-LM training run, converted
to the Hugging Face format by megatron2hf {{megatron2hf_version}}.

## Training run

| | |
|---|---|
| checkpoint | `{{checkpoint}}` ({{checkpoint_format}} format) |
{{#training_length}}
| iteration | {{iteration}} of {{training_length}} |
{{/training_length}}
{{^training_length}}
| iteration | {{iteration}} |
{{/training_length}}
| tokens seen | {{tokens_seen}}: {{tokens_seen_from}} |
| samples seen | {{samples_seen}} |
| global batch size × sequence length | {{global_batch_size}} × {{seq_length}} tokens |
| learning rate | {{lr_schedule}} |
| tokenizer | {{tokenizer}} |
| training log | `{{training_log}}` |
| SLURM job | {{training_job_id}} |
| wall time of the log | {{training_wall_time}} |

{{#data}}
## Data

The data the run was given (`data_path` and related arguments):

{{data}}

{{/data}}
## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("path/or/repo-id")
tokenizer = AutoTokenizer.from_pretrained("path/or/repo-id")
```

## Conversion

The weights are the checkpoint's own, rearranged and not recomputed ({{dtype}}). `megatron2hf.manifest.json` records
where they came from and a CRC-32C of every tensor ({{manifest}}); `megatron2hf verify FOLDER` checks a copy
against it.
)";
}

}  // namespace m2h::hub
