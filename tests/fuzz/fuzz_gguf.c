/* moegate — libFuzzer target for the GGUF reader.
 *
 * Opens the input with gguf_open_memory from an exactly-sized copy (so ASan
 * sees any read past the end) and, when it opens, walks every key, array
 * element and tensor through the public API with the corruption test's
 * walker, which checks every returned pointer against the buffer and every
 * accessor against the others. An inconsistency, an unexpected error code
 * or a message without the "gguf: " prefix traps, which libFuzzer reports
 * as a crash.
 *
 *   make fuzz && build/fuzz/fuzz_gguf -max_total_time=60 [CORPUS_DIR]
 */
#define GGUF_CORRUPT_NO_MAIN
#include "tests/corrupt/gguf_corrupt.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    gguf *g = NULL;
    char err[512] = "", why[1024];
    int rc = gguf_open_memory(&g, copy, size, err, sizeof err);
    if (rc == 0) {
        if (gguf_walk(g, copy, size, UINT64_MAX, NULL, why, sizeof why) != 0) {
            fprintf(stderr, "fuzz_gguf: inconsistent: %s\n", why);
            __builtin_trap();
        }
        gguf_close(g);
    } else if (g || (rc != MG_EFORMAT && rc != MG_EUNSUPPORTED) || strncmp(err, "gguf: ", 6) != 0) {
        fprintf(stderr, "fuzz_gguf: open gave %s \"%s\"\n", mg_err_name(rc), err);
        __builtin_trap();
    }
    free(copy);
    return 0;
}
