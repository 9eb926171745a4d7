/* SPDX-License-Identifier: MIT */
#include <stdio.h>

int main(int argc, char **argv)
{
        fprintf(stderr, "gpuslice-agent: no commands yet\n");
        return 2;
}
