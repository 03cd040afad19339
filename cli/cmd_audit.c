/* moegate db / audit — placeholder until the audit module lands (issue 9). */
#include <stdio.h>

#include "cli/cli.h"

int cmd_db(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "moegate db: not built yet\n");
    return 2;
}

int cmd_audit(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "moegate audit: not built yet\n");
    return 2;
}
