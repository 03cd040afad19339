/* moegate — token id -> text bytes, from the vocabulary in GGUF metadata.
 *
 * Enough to print what the engine generates: byte-level BPE vocabularies
 * (tokenizer.ggml.model "gpt2": each character of a piece stands for one
 * byte through GPT-2's byte-to-unicode table) and SentencePiece ones
 * ("llama": U+2581 is a space, <0xNN> pieces are raw bytes). Control tokens
 * decode to nothing unless asked for. Encoding text lives in the tokenizer.
 *
 * Thread safety: immutable after open.
 */
#ifndef MOEGATE_CORE_VOCAB_H
#define MOEGATE_CORE_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct vocab vocab;

/* Reads tokenizer.ggml.model, .tokens and .token_type (optional). The gguf
 * object must outlive the vocab (pieces point into it). */
int vocab_open(vocab **out, const gguf *g, char *err, size_t errlen);
void vocab_free(vocab *v); /* accepts NULL */
int64_t vocab_size(const vocab *v);
bool vocab_is_control(const vocab *v, int32_t id);

/* Writes the bytes token id stands for into buf (not NUL-terminated) and
 * returns their count (0 for control tokens unless show_control), or -1 when
 * id is out of range. Output longer than cap is truncated to cap. */
int vocab_decode(const vocab *v, int32_t id, bool show_control, char *buf, size_t cap);

#endif
