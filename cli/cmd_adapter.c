/* moegate adapter — LoRA adapter commands (inspect). Being written: the
 * adapters/ module loads PEFT and GGUF LoRA files. */
#include <stdio.h>

#include "cli/cli.h"

int cmd_adapter(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "moegate adapter: not implemented yet\n");
    return 1;
}
