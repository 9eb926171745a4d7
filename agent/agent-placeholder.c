/* SPDX-License-Identifier: MIT */
/* Keeps libagent non-empty until the discovery modules land. */
int agent_placeholder(void);
int agent_placeholder(void)
{
        return 0;
}
