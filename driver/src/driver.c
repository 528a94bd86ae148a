/*
 * driver.c - DriverEntry, the control device, callout registration, BFE state, unload.
 *
 * Fail-open by design: the addon's filters that call these callouts carry
 * FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED, so when this driver is stopped, unloaded or never
 * started, traffic flows unshaped (NetClamp's hard BLOCK rules are plain WFP filters and do not depend on
 * the driver). A shaper that fails closed would cut the machine off the network on a driver bug.
 */
#include "nc_driver.h"

nc_globals g_nc;

DRIVER_INITIALIZE DriverEntry;
static EVT_WDF_DRIVER_UNLOAD nc_evt_driver_unload;

static const GUID nc_callout_keys[NC_CALLOUT_COUNT] = {
    NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V4_GUID_INIT,  NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V6_GUID_INIT,
    NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V4_GUID_INIT, NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V6_GUID_INIT,
    NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V4_GUID_INIT,  NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V6_GUID_INIT,
};

UINT64 nc_now_ticks(void)
{
    return KeQueryInterruptTime();
}

/* Registers the six callouts with the filter engine; idempotent. PASSIVE_LEVEL. */
NTSTATUS nc_register_callouts(void)
{
    NTSTATUS status = STATUS_SUCCESS;
    UINT32 slot;

    WdfWaitLockAcquire(g_nc.registration_lock, NULL);
    if (g_nc.callouts_registered || g_nc.unloading) {
        WdfWaitLockRelease(g_nc.registration_lock);
        return STATUS_SUCCESS;
    }
    for (slot = 0; slot < NC_CALLOUT_COUNT; slot++) {
        FWPS_CALLOUT3 callout;
        RtlZeroMemory(&callout, sizeof(callout));
        callout.calloutKey = nc_callout_keys[slot];
        callout.notifyFn = nc_callout_notify;
        if (slot <= NC_CALLOUT_FLOW_ESTABLISHED_V6) {
            callout.classifyFn = nc_flow_established_classify;
        } else {
            /* Called only for flows that carry our context (associated at flow establishment). */
            callout.flags = FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW;
            callout.classifyFn = nc_transport_classify;
            callout.flowDeleteFn = nc_transport_flow_delete;
        }
        status = FwpsCalloutRegister3(g_nc.wdm_device, &callout, &g_nc.callout_ids[slot]);
        if (!NT_SUCCESS(status)) {
            break;
        }
    }
    if (NT_SUCCESS(status)) {
        g_nc.callouts_registered = TRUE;
    } else {
        /* Roll back the ones that made it, so a later BFE notification can retry from a clean slate. */
        while (slot > 0) {
            slot--;
            FwpsCalloutUnregisterById0(g_nc.callout_ids[slot]);
            g_nc.callout_ids[slot] = 0;
        }
    }
    WdfWaitLockRelease(g_nc.registration_lock);
    return status;
}

/* Unregisters every callout. Flow contexts must be gone first (nc_shaper_detach_all_flows), otherwise the
 * filter engine answers STATUS_DEVICE_BUSY; retry a little while classifies still in progress finish. */
void nc_unregister_callouts(void)
{
    UINT32 slot;
    WdfWaitLockAcquire(g_nc.registration_lock, NULL);
    if (g_nc.callouts_registered) {
        for (slot = 0; slot < NC_CALLOUT_COUNT; slot++) {
            UINT32 attempt;
            for (attempt = 0; attempt < 50; attempt++) {
                NTSTATUS status = FwpsCalloutUnregisterById0(g_nc.callout_ids[slot]);
                if (status != STATUS_DEVICE_BUSY) {
                    break;
                }
                LARGE_INTEGER delay;
                delay.QuadPart = -10 * 1000 * 10; /* 10 ms, relative */
                KeDelayExecutionThread(KernelMode, FALSE, &delay);
            }
            g_nc.callout_ids[slot] = 0;
        }
        g_nc.callouts_registered = FALSE;
    }
    WdfWaitLockRelease(g_nc.registration_lock);
}

/* BFE came up (or is going down). Registration is with the kernel filter engine, so it survives a BFE
 * restart; BFE only has to be running for the first registration and for the addon to add filters. */
static void NTAPI nc_bfe_state_changed(void *context, FWPM_SERVICE_STATE new_state)
{
    UNREFERENCED_PARAMETER(context);
    if (new_state == FWPM_SERVICE_RUNNING) {
        InterlockedExchange(&g_nc.bfe_running, 1);
        (void)nc_register_callouts();
        nc_post_event(NETCLAMP_EVENT_BFE_STATE, 0, 0, 0, 1, 0);
    } else if (new_state == FWPM_SERVICE_STOP_PENDING || new_state == FWPM_SERVICE_STOPPED) {
        if (InterlockedExchange(&g_nc.bfe_running, 0) != 0) {
            nc_post_event(NETCLAMP_EVENT_BFE_STATE, 0, 0, 0, 0, 0);
        }
    }
}

static NTSTATUS nc_create_control_device(WDFDRIVER driver)
{
    NTSTATUS status;
    PWDFDEVICE_INIT device_init;
    WDF_OBJECT_ATTRIBUTES file_attributes;
    WDF_FILEOBJECT_CONFIG file_config;
    WDFDEVICE device;
    DECLARE_CONST_UNICODE_STRING(nt_name, NETCLAMP_NT_DEVICE_NAME_W);
    DECLARE_CONST_UNICODE_STRING(dos_name, NETCLAMP_DOS_DEVICE_NAME_W);

    /* SYSTEM and Administrators only: the device changes how every process on the machine is shaped. */
    device_init = WdfControlDeviceInitAllocate(driver, &SDDL_DEVOBJ_SYS_ALL_ADM_ALL);
    if (device_init == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    WdfDeviceInitSetDeviceType(device_init, FILE_DEVICE_NETWORK);
    WdfDeviceInitSetCharacteristics(device_init, FILE_DEVICE_SECURE_OPEN, FALSE);
    /* One client (the service): a second open fails with STATUS_ACCESS_DENIED. */
    WdfDeviceInitSetExclusive(device_init, TRUE);
    status = WdfDeviceInitAssignName(device_init, &nt_name);
    if (!NT_SUCCESS(status)) {
        WdfDeviceInitFree(device_init);
        return status;
    }

    WDF_FILEOBJECT_CONFIG_INIT(&file_config, WDF_NO_EVENT_CALLBACK, WDF_NO_EVENT_CALLBACK,
                               WDF_NO_EVENT_CALLBACK);
    WDF_OBJECT_ATTRIBUTES_INIT_CONTEXT_TYPE(&file_attributes, nc_file_context);
    WdfDeviceInitSetFileObjectConfig(device_init, &file_config, &file_attributes);

    /* On success WdfDeviceCreate takes device_init; for a control device, a failure leaves it to us. */
    status = WdfDeviceCreate(&device_init, WDF_NO_OBJECT_ATTRIBUTES, &device);
    if (!NT_SUCCESS(status)) {
        WdfDeviceInitFree(device_init);
        return status;
    }
    status = WdfDeviceCreateSymbolicLink(device, &dos_name);
    if (!NT_SUCCESS(status)) {
        WdfObjectDelete(device);
        return status;
    }
    status = nc_create_queues(device);
    if (!NT_SUCCESS(status)) {
        WdfObjectDelete(device);
        return status;
    }

    g_nc.control_device = device;
    g_nc.wdm_device = WdfDeviceWdmGetDeviceObject(device);
    WdfControlFinishInitializing(device);
    return STATUS_SUCCESS;
}

static NTSTATUS nc_create_timer(void)
{
    WDF_TIMER_CONFIG timer_config;
    WDF_OBJECT_ATTRIBUTES attributes;

    WDF_TIMER_CONFIG_INIT(&timer_config, nc_reinject_timer_fn);
    /* The default timer is tied to the 15.6 ms system tick: far too coarse to pace packets. */
    timer_config.UseHighResolutionTimer = WdfTrue;
    WDF_OBJECT_ATTRIBUTES_INIT(&attributes);
    attributes.ParentObject = g_nc.control_device;
    return WdfTimerCreate(&timer_config, &attributes, &g_nc.reinject_timer);
}

/* Undoes DriverEntry in reverse; safe on a partially initialised driver. Leaves nothing registered. */
static void nc_teardown(void)
{
    InterlockedExchange(&g_nc.unloading, 1);

    if (g_nc.bfe_subscription != NULL) {
        FwpmBfeStateUnsubscribeChanges0(g_nc.bfe_subscription);
        g_nc.bfe_subscription = NULL;
    }
    if (g_nc.flow_pool != NULL) {
        /* Removing the flow contexts runs the flow-delete callback, which frees queued clones. */
        nc_shaper_detach_all_flows();
    }
    if (g_nc.registration_lock != NULL) {
        nc_unregister_callouts();
    }
    if (g_nc.reinject_timer != NULL) {
        WdfTimerStop(g_nc.reinject_timer, TRUE); /* waits for a running timer function */
    }
    if (g_nc.packet_pool != NULL) {
        nc_shaper_flush_all();
    }
    /* Completions of injections already handed to the stack still reference the handles and the pool. */
    if (InterlockedCompareExchange(&g_nc.injections_in_flight, 0, 0) != 0) {
        KeWaitForSingleObject(&g_nc.injections_drained, Executive, KernelMode, FALSE, NULL);
    }
    if (g_nc.injection_v4 != NULL) {
        FwpsInjectionHandleDestroy0(g_nc.injection_v4);
        g_nc.injection_v4 = NULL;
    }
    if (g_nc.injection_v6 != NULL) {
        FwpsInjectionHandleDestroy0(g_nc.injection_v6);
        g_nc.injection_v6 = NULL;
    }
    if (g_nc.control_device != NULL) {
        WdfObjectDelete(g_nc.control_device); /* also deletes its queues, pending requests and timer */
        g_nc.control_device = NULL;
        g_nc.reinject_timer = NULL;
    }
    nc_shaper_free();
}

static void nc_evt_driver_unload(WDFDRIVER driver)
{
    UNREFERENCED_PARAMETER(driver);
    nc_teardown();
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver_object, PUNICODE_STRING registry_path)
{
    NTSTATUS status;
    WDF_DRIVER_CONFIG config;
    WDFDRIVER driver;
    LARGE_INTEGER system_time;

    RtlZeroMemory(&g_nc, sizeof(g_nc));
    KeInitializeSpinLock(&g_nc.shaper_lock);
    KeInitializeSpinLock(&g_nc.event_lock);
    KeInitializeEvent(&g_nc.injections_drained, NotificationEvent, FALSE);
    KeQuerySystemTimePrecise(&system_time);
    g_nc.load_time_100ns = (UINT64)system_time.QuadPart;

    /* Non-PnP: no hardware, no AddDevice; the control device is the only device. */
    WDF_DRIVER_CONFIG_INIT(&config, WDF_NO_EVENT_CALLBACK);
    config.DriverInitFlags |= WdfDriverInitNonPnpDriver;
    config.EvtDriverUnload = nc_evt_driver_unload;
    status = WdfDriverCreate(driver_object, registry_path, WDF_NO_OBJECT_ATTRIBUTES, &config, &driver);
    if (!NT_SUCCESS(status)) {
        return status;
    }
    g_nc.driver = driver;

    status = WdfWaitLockCreate(WDF_NO_OBJECT_ATTRIBUTES, &g_nc.registration_lock);
    if (NT_SUCCESS(status)) status = nc_shaper_init();
    if (NT_SUCCESS(status)) status = nc_create_control_device(driver);
    if (NT_SUCCESS(status)) status = nc_create_timer();
    if (NT_SUCCESS(status)) status = FwpsInjectionHandleCreate0(AF_INET, FWPS_INJECTION_TYPE_TRANSPORT,
                                                               &g_nc.injection_v4);
    if (NT_SUCCESS(status)) status = FwpsInjectionHandleCreate0(AF_INET6, FWPS_INJECTION_TYPE_TRANSPORT,
                                                               &g_nc.injection_v6);
    if (NT_SUCCESS(status)) {
        /* Subscribe first, then look: a BFE start between the two is then not missed. */
        status = FwpmBfeStateSubscribeChanges0(g_nc.wdm_device, nc_bfe_state_changed, NULL,
                                               &g_nc.bfe_subscription);
    }
    if (NT_SUCCESS(status) && FwpmBfeStateGet0() == FWPM_SERVICE_RUNNING) {
        InterlockedExchange(&g_nc.bfe_running, 1);
        status = nc_register_callouts();
    }
    if (!NT_SUCCESS(status)) {
        /* EvtDriverUnload is not called when DriverEntry fails: clean up here. */
        nc_teardown();
    }
    return status;
}
