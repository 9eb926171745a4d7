/* SPDX-License-Identifier: MIT */
#include "vf-config.h"

#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/sriov.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_sock *, nl_socket_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct rtnl_link *, rtnl_link_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct rtnl_link_vf *, rtnl_link_vf_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nl_addr *, nl_addr_put);

void vf_config_baseline(VfConfig *ret)
{
        *ret = (VfConfig){
            .spoofchk = true,
            .trust = false,
            .link_state = VF_LINK_STATE_DISABLE,
        };
}

int vf_config_validate(const VfConfig *c)
{
        if (!c->keep_mac && (c->mac[0] & 0x01)) /* multicast, broadcast included */
                return -EINVAL;
        if (c->vlan > 4094 || c->qos > 7 || (c->qos && !c->vlan))
                return -EINVAL;
        if (c->link_state != VF_LINK_STATE_AUTO && c->link_state != VF_LINK_STATE_ENABLE &&
            c->link_state != VF_LINK_STATE_DISABLE)
                return -EINVAL;
        return 0;
}

int vf_mac_parse(const char *s, uint8_t ret[6])
{
        unsigned b[6];
        char tail;

        if (!s || strlen(s) != 17)
                return -EINVAL;
        if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
                   &tail) != 6)
                return -EINVAL;
        for (size_t i = 0; i < 6; i++) {
                if (s[i * 3] == ' ' || s[i * 3 + 1] == ' ')
                        return -EINVAL;
                ret[i] = (uint8_t)b[i];
        }
        return 0;
}

void vf_mac_format(const uint8_t m[6], char ret[static 18])
{
        snprintf(ret, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

bool vf_mac_is_zero(const uint8_t mac[6])
{
        static const uint8_t zero[6] = {0};
        return memcmp(mac, zero, 6) == 0;
}

/* libnl's error codes are its own; the kernel's errno is what callers need. */
static int nl_to_errno(int nlerr)
{
        switch (-nlerr) {
        case NLE_NOMEM:
                return -ENOMEM;
        case NLE_INVAL:
                return -EINVAL;
        case NLE_OPNOTSUPP:
                return -EOPNOTSUPP;
        case NLE_OBJ_NOTFOUND:
        case NLE_NODEV:
                return -ENODEV;
        case NLE_PERM:
                return -EPERM;
        case NLE_BUSY:
                return -EBUSY;
        case NLE_RANGE:
                return -ERANGE;
        case NLE_AGAIN:
                return -EAGAIN;
        case NLE_EXIST:
                return -EEXIST;
        default:
                return -EIO;
        }
}

static int open_route_socket(struct nl_sock **ret)
{
        _cleanup_(nl_socket_freep) struct nl_sock *sk = nl_socket_alloc();
        int r;

        if (!sk)
                return -ENOMEM;
        r = nl_connect(sk, NETLINK_ROUTE);
        if (r < 0)
                return nl_to_errno(r);
        *ret = TAKE_PTR(sk);
        return 0;
}

static int get_link(struct nl_sock *sk, const char *ifname, struct rtnl_link **ret)
{
        /* rtnl_link_get_kernel asks with IFLA_EXT_MASK = RTEXT_FILTER_VF, so
         * the answer carries IFLA_VFINFO_LIST. */
        int r = rtnl_link_get_kernel(sk, 0, ifname, ret);
        return r < 0 ? nl_to_errno(r) : 0;
}

static int read_vf(struct rtnl_link *link, unsigned vf, VfConfig *ret)
{
        _cleanup_(rtnl_link_vf_putp) struct rtnl_link_vf *v = NULL;
        VfConfig c = {0};
        uint32_t u, n = 0;
        struct nl_addr *addr = NULL;
        nl_vf_vlans_t *vlans = NULL;

        /* libnl 3.7's rtnl_link_vf_get dereferences a missing VF list: ask
         * for the count (IFLA_NUM_VF) first. */
        if (rtnl_link_get_num_vf(link, &n) < 0 || vf >= n)
                return -ENOENT;
        v = rtnl_link_vf_get(link, vf);
        if (!v)
                return -ENOENT;
        if (rtnl_link_vf_get_addr(v, &addr) == 0 && addr && nl_addr_get_len(addr) >= 6)
                memcpy(c.mac, nl_addr_get_binary_addr(addr), 6);
        if (rtnl_link_vf_get_vlans(v, &vlans) == 0 && vlans && vlans->size > 0) {
                c.vlan = vlans->vlans[0].vf_vlan;
                c.qos = vlans->vlans[0].vf_vlan_qos;
        }
        if (rtnl_link_vf_get_spoofchk(v, &u) == 0)
                c.spoofchk = u != 0;
        if (rtnl_link_vf_get_trust(v, &u) == 0)
                c.trust = u != 0;
        if (rtnl_link_vf_get_linkstate(v, &u) == 0)
                c.link_state = (VfLinkState)u;
        *ret = c;
        return 0;
}

int vf_config_read(const char *ifname, unsigned vf, VfConfig *ret)
{
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL;
        int r;

        if (!ifname || !*ifname)
                return -EINVAL;
        r = open_route_socket(&sk);
        if (r < 0)
                return r;
        r = get_link(sk, ifname, &link);
        if (r < 0)
                return r;
        return read_vf(link, vf, ret);
}

const char *vf_config_diff(const VfConfig *a, const VfConfig *b)
{
        if (!a->keep_mac && memcmp(a->mac, b->mac, 6) != 0)
                return "mac";
        if (a->vlan != b->vlan)
                return "vlan";
        if (a->qos != b->qos)
                return "qos";
        if (a->spoofchk != b->spoofchk)
                return "spoofchk";
        if (a->trust != b->trust)
                return "trust";
        if (a->link_state != b->link_state)
                return "link_state";
        return NULL;
}

/* One VF setting per request: a driver refusing one setting then names it
 * (the kernel stops at the first refused attribute of a request anyway). */
typedef enum { SET_MAC, SET_VLAN, SET_SPOOFCHK, SET_TRUST, SET_LINK_STATE } VfSetting;

static int change_one(struct nl_sock *sk, struct rtnl_link *orig, unsigned vf, const VfConfig *c,
                      VfSetting what)
{
        _cleanup_(rtnl_link_putp) struct rtnl_link *change = rtnl_link_alloc();
        _cleanup_(rtnl_link_vf_putp) struct rtnl_link_vf *v = rtnl_link_vf_alloc();
        _cleanup_(nl_addr_putp) struct nl_addr *addr = NULL;
        nl_vf_vlans_t *vlans = NULL;
        int r;

        if (!change || !v)
                return -ENOMEM;
        rtnl_link_vf_set_index(v, vf);
        switch (what) {
        case SET_MAC:
                addr = nl_addr_build(AF_LLC, c->mac, 6);
                if (!addr)
                        return -ENOMEM;
                rtnl_link_vf_set_addr(v, addr);
                break;
        case SET_VLAN:
                r = rtnl_link_vf_vlan_alloc(&vlans, 1);
                if (r < 0)
                        return nl_to_errno(r);
                vlans->vlans[0].vf_vlan = c->vlan;
                vlans->vlans[0].vf_vlan_qos = c->qos;
                vlans->vlans[0].vf_vlan_proto = ETH_P_8021Q;
                rtnl_link_vf_set_vlans(v, vlans);
                rtnl_link_vf_vlan_put(vlans); /* the VF holds its own reference */
                break;
        case SET_SPOOFCHK:
                rtnl_link_vf_set_spoofchk(v, c->spoofchk);
                break;
        case SET_TRUST:
                rtnl_link_vf_set_trust(v, c->trust);
                break;
        case SET_LINK_STATE:
                rtnl_link_vf_set_linkstate(v, c->link_state);
                break;
        }
        r = rtnl_link_vf_add(change, v);
        if (r < 0)
                return nl_to_errno(r);
        r = rtnl_link_change(sk, orig, change, 0);
        return r < 0 ? nl_to_errno(r) : 0;
}

int vf_config_apply(const char *ifname, unsigned vf, const VfConfig *c)
{
        return vf_config_apply_read(ifname, vf, c, NULL);
}

int vf_config_apply_read(const char *ifname, unsigned vf, const VfConfig *c, VfConfig *ret)
{
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL, *after = NULL;
        VfConfig got;
        int r;

        if (!ifname || !*ifname)
                return -EINVAL;
        r = vf_config_validate(c);
        if (r < 0)
                return r;
        r = open_route_socket(&sk);
        if (r < 0)
                return r;
        r = get_link(sk, ifname, &link);
        if (r < 0)
                return r;
        static const VfSetting order[] = {SET_LINK_STATE, SET_MAC, SET_VLAN, SET_SPOOFCHK,
                                          SET_TRUST};
        /* Link state first: a VF being reconfigured is taken down before its
         * identity changes, and (for the baseline) stays down. Enabling comes
         * last when the wanted state is up. */
        for (size_t i = 0; i < ELEMENTSOF(order); i++) {
                if (order[i] == SET_LINK_STATE && c->link_state != VF_LINK_STATE_DISABLE)
                        continue;
                if (order[i] == SET_MAC && c->keep_mac)
                        continue;
                r = change_one(sk, link, vf, c, order[i]);
                if (r < 0)
                        return r;
        }
        if (c->link_state != VF_LINK_STATE_DISABLE) {
                r = change_one(sk, link, vf, c, SET_LINK_STATE);
                if (r < 0)
                        return r;
        }
        r = get_link(sk, ifname, &after);
        if (r < 0)
                return r;
        r = read_vf(after, vf, &got);
        if (r < 0)
                return r;
        if (ret)
                *ret = got;
        return vf_config_diff(c, &got) ? -EIO : 0;
}
