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
        unsigned vlan; /* 0: untagged */
        unsigned qos;  /* 802.1p priority, 0-7; only with a VLAN */
        bool spoofchk;
        bool trust;
        VfLinkState link_state;
} VfConfig;

/* The parked state: zero MAC, no VLAN, spoofchk on, trust off, link disabled. */
void vf_config_baseline(VfConfig *ret);

/* -EINVAL for a multicast/broadcast MAC, a VLAN above 4094, QoS above 7 (or
 * QoS without a VLAN), an unknown link state. The zero MAC is allowed (unset). */
int vf_config_validate(const VfConfig *c);

/* "aa:bb:cc:dd:ee:ff" -> bytes; -EINVAL when malformed. */
int vf_mac_parse(const char *s, uint8_t ret[6]);

/* Applies c to VF vf of ifname, then reads it back: 0 when every field
 * matches, -EIO when the driver accepted but reports something else,
 * -ENODEV (no such netdev), the kernel's -errno (-EINVAL for an unknown VF,
 * -EOPNOTSUPP for a driver without that setting). */
int vf_config_apply(const char *ifname, unsigned vf, const VfConfig *c);

/* Reads VF vf of ifname; -ENOENT when the kernel reports no such VF. */
int vf_config_read(const char *ifname, unsigned vf, VfConfig *ret);

/* Field-by-field comparison; the name of the first differing field or NULL. */
const char *vf_config_diff(const VfConfig *a, const VfConfig *b);
