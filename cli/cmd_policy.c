/* moegate policy — placeholder until the policy module lands (issue 8). */
#include <stdio.h>

#include "cli/cli.h"

int cmd_policy(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "moegate policy: not built yet\n");
    return 2;
}
