/* moegate tokenize — text to token ids and pieces, with the tokenizer of a
 * GGUF model or of a Hugging Face tokenizer.json.
 *
 *   moegate tokenize -m MODEL.gguf -p "text"         one line per token: id, piece
 *   moegate tokenize --hf DIR -f FILE --ids           ids only, space separated
 *   moegate tokenize --hf DIR --jsonl < cases.jsonl   batch: each input line a JSON
 *                                                     string, each output line a JSON
 *                                                     array of ids (tests use this)
 *   --special      match control tokens typed in the text (default: plain text)
 *   --add-special  add BOS/EOS as the tokenizer's configuration asks
 *   --decode       batch mode: the input lines are JSON arrays of ids; each
 *                  output line is the decoded text as a JSON string
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/errors.h"
#include "core/gguf.h"
#include "core/tokenizer.h"

static int usage_tokenize(FILE *f)
{
    fprintf(f, "usage: moegate tokenize (-m MODEL.gguf | --hf DIR | --tokenizer-json FILE [--tokenizer-config FILE])\n"
               "                        (-p TEXT | -f FILE | --jsonl [--decode]) [--ids] [--special] [--add-special]\n");
    return 2;
}

/* Opens the tokenizer named by the options; prints the error and returns
 * NULL on failure. */
tokenizer *cli_open_tokenizer(const char *model, const char *hf_dir, const char *json, const char *config)
{
    char err[512];
    tokenizer *t = NULL;
    int rc;
    if (model) {
        gguf *g = NULL;
        rc = gguf_open(&g, model, err, sizeof err);
        if (!rc) {
            rc = tokenizer_open_gguf(&t, g, err, sizeof err);
            gguf_close(g);
        }
    } else {
        char jp[4096], cp[4096];
        if (hf_dir) {
            snprintf(jp, sizeof jp, "%s/tokenizer.json", hf_dir);
            snprintf(cp, sizeof cp, "%s/tokenizer_config.json", hf_dir);
            json = jp;
            FILE *f = fopen(cp, "r");
            config = f ? cp : NULL;
            if (f)
                fclose(f);
        }
        rc = tokenizer_open_hf(&t, json, config, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "moegate: %s\n", err);
        return NULL;
    }
    return t;
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = cap > ((size_t)1 << 30) ? NULL : realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    *len = n;
    return b;
}

static void print_piece(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static int batch(tokenizer *t, unsigned flags, bool decode)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        json_error_t je;
        json_t *v = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        /* {"hex": "..."}: a byte string that need not be UTF-8 */
        const char *hex = json_is_object(v) ? json_string_value(json_object_get(v, "hex")) : NULL;
        if (hex && !decode) {
            size_t hl = strlen(hex);
            char *bytes = malloc(hl / 2 + 1);
            bool ok = bytes && hl % 2 == 0;
            for (size_t i = 0; ok && i < hl / 2; i++) {
                unsigned x;
                ok = sscanf(hex + 2 * i, "%2x", &x) == 1;
                bytes[i] = (char)x;
            }
            json_decref(v);
            v = ok ? json_stringn_nocheck(bytes, hl / 2) : NULL;
            free(bytes);
        }
        if (!v || (!decode && !json_is_string(v)) || (decode && !json_is_array(v))) {
            fprintf(stderr, "moegate tokenize: stdin line %ld: expected a JSON %s\n", lineno,
                    decode ? "array of ids" : "string");
            json_decref(v);
            rc = 1;
            break;
        }
        if (decode) {
            size_t k = json_array_size(v);
            int32_t *ids = malloc((k ? k : 1) * sizeof *ids);
            for (size_t i = 0; ids && i < k; i++)
                ids[i] = (int32_t)json_integer_value(json_array_get(v, i));
            char *s = NULL;
            size_t sl = 0;
            if (!ids || tokenizer_decode(t, ids, k, true, &s, &sl)) {
                free(ids);
                json_decref(v);
                rc = 1;
                break;
            }
            /* decoded bytes may be invalid UTF-8 (byte pieces): print as is,
             * JSON-escaped byte by byte where needed */
            json_t *js = json_stringn_nocheck(s, sl);
            char *out = json_dumps(js, JSON_ENCODE_ANY);
            puts(out ? out : "null");
            free(out);
            json_decref(js);
            free(s);
            free(ids);
        } else {
            tokenizer_ids ids = {0};
            if (tokenizer_encode(t, json_string_value(v), json_string_length(v), flags, &ids)) {
                fprintf(stderr, "moegate tokenize: out of memory\n");
                json_decref(v);
                rc = 1;
                break;
            }
            putchar('[');
            for (size_t i = 0; i < ids.n; i++)
                printf(i ? ",%d" : "%d", (int)ids.ids[i]);
            puts("]");
            tokenizer_ids_free(&ids);
        }
        json_decref(v);
    }
    free(line);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *hf = NULL, *json = NULL, *config = NULL, *text = NULL, *file = NULL;
    bool ids_only = false, jsonl = false, decode = false;
    unsigned flags = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && more)
            model = argv[++i];
        else if (!strcmp(a, "--hf") && more)
            hf = argv[++i];
        else if (!strcmp(a, "--tokenizer-json") && more)
            json = argv[++i];
        else if (!strcmp(a, "--tokenizer-config") && more)
            config = argv[++i];
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && more)
            text = argv[++i];
        else if (!strcmp(a, "-f") && more)
            file = argv[++i];
        else if (!strcmp(a, "--ids"))
            ids_only = true;
        else if (!strcmp(a, "--jsonl"))
            jsonl = true;
        else if (!strcmp(a, "--decode"))
            decode = true;
        else if (!strcmp(a, "--special"))
            flags |= TOKENIZER_PARSE_SPECIAL;
        else if (!strcmp(a, "--add-special"))
            flags |= TOKENIZER_ADD_SPECIAL;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_tokenize(stdout);
            return 0;
        } else {
            fprintf(stderr, "moegate tokenize: unknown or incomplete option '%s'\n", a);
            return usage_tokenize(stderr);
        }
    }
    if (!!model + !!hf + !!json != 1 || !!text + !!file + jsonl != 1)
        return usage_tokenize(stderr);
    tokenizer *t = cli_open_tokenizer(model, hf, json, config);
    if (!t)
        return 1;
    int rc = 0;
    if (jsonl) {
        rc = batch(t, flags, decode);
        tokenizer_free(t);
        return rc;
    }
    size_t len = 0;
    char *buf = NULL;
    if (file) {
        FILE *f = strcmp(file, "-") ? fopen(file, "rb") : stdin;
        if (!f) {
            fprintf(stderr, "moegate tokenize: cannot open %s: %s\n", file, strerror(errno));
            tokenizer_free(t);
            return 1;
        }
        buf = read_all(f, &len);
        if (f != stdin)
            fclose(f);
        if (!buf) {
            fprintf(stderr, "moegate tokenize: out of memory reading %s\n", file);
            tokenizer_free(t);
            return 1;
        }
        text = buf;
    } else {
        len = strlen(text);
    }
    tokenizer_ids ids = {0};
    if (tokenizer_encode(t, text, len, flags, &ids)) {
        fprintf(stderr, "moegate tokenize: out of memory\n");
        rc = 1;
    } else if (ids_only) {
        for (size_t i = 0; i < ids.n; i++)
            printf(i ? " %d" : "%d", (int)ids.ids[i]);
        putchar('\n');
    } else {
        for (size_t i = 0; i < ids.n; i++) {
            size_t pl;
            const char *p = tokenizer_piece(t, ids.ids[i], &pl);
            printf("%8d  ", (int)ids.ids[i]);
            print_piece(p, pl);
            putchar('\n');
        }
        fflush(stdout); /* the count after the list, when both go to one terminal */
        fprintf(stderr, "%zu tokens\n", ids.n);
    }
    tokenizer_ids_free(&ids);
    free(buf);
    tokenizer_free(t);
    return rc;
}
