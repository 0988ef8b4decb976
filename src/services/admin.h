/*
 * admin service: parleyctl's methods (parley.AdminService), for the admin
 * socket and the admin role on a service node's RPC port. See admin.c.
 */
#ifndef PARLEY_SERVICES_ADMIN_H
#define PARLEY_SERVICES_ADMIN_H

#include "services/svc.h"

extern const svc_def svc_admin;

#endif
