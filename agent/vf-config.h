/* SPDX-License-Identifier: MIT */
#pragma once

/* A NIC VF's switch-side settings, set on its PF's netdev over rtnetlink with
 * libnl-route-3 (rtnl_link_vf_*), read back the same way and compared:
 * MAC, VLAN + QoS, spoof checking, trust, link state. A slot's tenant gets
 * its own MAC and VLAN with spoof checking on and trust off (the VF can
 * neither forge source addresses nor switch to promiscuous/multicast-all);
 * teardown puts the baseline back (no MAC, no VLAN, spoofchk on, trust off,
 * link disabled), so a parked VF carries no traffic and nothing of the last
 * tenant. Netlink has no paths: the root of the other modules does not apply,
 * the network namespace of the calling thread does. */

#include <stdbool.h>
#include <stdint.h>

typedef enum {
        VF_LINK_STATE_AUTO = 0, /* IFLA_VF_LINK_STATE_* */
        VF_LINK_STATE_ENABLE = 1,
        VF_LINK_STATE_DISABLE = 2,
} VfLinkState;

typedef struct {
        uint8_t mac[6];
        /* Leave the MAC as the VF has it (a network's "hardware" policy):
         * mac is neither set nor validated nor compared. */
        bool keep_mac;
        unsigned vlan; /* 0: untagged */
        unsigned qos;  /* 802.1p priority, 0-7; only with a VLAN */
        bool spoofchk;
        bool trust;
        VfLinkState link_state;
} VfConfig;

/* The parked state: zero MAC, no VLAN, spoofchk on, trust off, link disabled. */
void vf_config_baseline(VfConfig *ret);

/* -EINVAL for a multicast/broadcast MAC, a VLAN above 4094, QoS above 7 (or
 * QoS without a VLAN), an unknown link state. The zero MAC is allowed (unset);
 * with keep_mac the MAC is not looked at. */
int vf_config_validate(const VfConfig *c);

/* "aa:bb:cc:dd:ee:ff" -> bytes; -EINVAL when malformed. */
int vf_mac_parse(const char *s, uint8_t ret[6]);
/* bytes -> "aa:bb:cc:dd:ee:ff" (lower case). */
void vf_mac_format(const uint8_t mac[6], char ret[static 18]);
/* 00:00:00:00:00:00: no MAC (what a PF reports for a VF it gave none). */
bool vf_mac_is_zero(const uint8_t mac[6]);

/* Applies c to VF vf of ifname, then reads it back: 0 when every field
 * matches, -EIO when the driver accepted but reports something else,
 * -ENODEV (no such netdev), the kernel's -errno (-EINVAL for an unknown VF,
 * -EOPNOTSUPP for a driver without that setting). */
int vf_config_apply(const char *ifname, unsigned vf, const VfConfig *c);

/* vf_config_apply() that also hands back what was read back (ret may be
 * NULL): with keep_mac, ret->mac is the MAC the VF keeps. */
int vf_config_apply_read(const char *ifname, unsigned vf, const VfConfig *c, VfConfig *ret);

/* Reads VF vf of ifname; -ENOENT when the kernel reports no such VF. */
int vf_config_read(const char *ifname, unsigned vf, VfConfig *ret);

/* Field-by-field comparison; the name of the first differing field or NULL.
 * The MAC is skipped when a has keep_mac. */
const char *vf_config_diff(const VfConfig *a, const VfConfig *b);
