/*
 * wdk_stub_check.h - for a Linux syntax check of the driver glue ONLY; never used by a real build.
 *
 * mingw-w64 ships the real <ntddk.h> but no <wdf.h>, <ndis.h> (NDIS 6) or <fwpsk.h>. This header declares,
 * by hand, the subset of those names the glue uses, with the signatures the WDK documents, so that
 *   x86_64-w64-mingw32-gcc -fsyntax-only -DNETCLAMP_WDK_STUB_CHECK driver/src/<file>.c
 * catches C errors, typos, undeclared names, wrong argument counts and type mismatches before a Windows
 * runner does. It proves nothing about the real headers: the WDK build in .github/workflows/windows.yml
 * is the authority. Keep it declarations only: no behaviour lives here.
 */
#ifndef NC_WDK_STUB_CHECK_H
#define NC_WDK_STUB_CHECK_H

#include <ntddk.h>
#include <wdmsec.h>

/* ---- kernel names newer than mingw's ntddk.h ---- */
typedef UINT64 POOL_FLAGS;
#define POOL_FLAG_NON_PAGED 0x0000000000000040ULL
PVOID ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
VOID KeQuerySystemTimePrecise(PLARGE_INTEGER CurrentTime);

/* ---- networking base types ---- */
typedef USHORT ADDRESS_FAMILY;
#define AF_INET 2
#define AF_INET6 23
typedef UINT32 COMPARTMENT_ID;
#define UNSPECIFIED_COMPARTMENT_ID 0
typedef ULONG IF_INDEX;
typedef struct { union { struct { ULONG Zone : 28; ULONG Level : 4; }; ULONG Value; }; } SCOPE_ID;
typedef struct _WSACMSGHDR { SIZE_T cmsg_len; INT cmsg_level; INT cmsg_type; } WSACMSGHDR;

/* ---- NDIS 6 (NET_BUFFER_LIST) ---- */
typedef PVOID NDIS_HANDLE;
typedef int NDIS_STATUS;
#define NDIS_STATUS_SUCCESS ((NDIS_STATUS)0)
typedef struct _NET_BUFFER {
    struct _NET_BUFFER *Next;
    ULONG DataLength;
} NET_BUFFER;
typedef struct _NET_BUFFER_LIST {
    struct _NET_BUFFER_LIST *Next;
    NET_BUFFER *FirstNetBuffer;
    NDIS_STATUS Status;
} NET_BUFFER_LIST;
#define NET_BUFFER_LIST_FIRST_NB(_NBL) ((_NBL)->FirstNetBuffer)
#define NET_BUFFER_NEXT_NB(_NB) ((_NB)->Next)
#define NET_BUFFER_DATA_LENGTH(_NB) ((_NB)->DataLength)
#define NET_BUFFER_LIST_STATUS(_NBL) ((_NBL)->Status)
typedef VOID NET_BUFFER_ALLOCATE_MDL_HANDLER;
NDIS_STATUS NdisRetreatNetBufferDataStart(NET_BUFFER *NetBuffer, ULONG DataOffsetDelta, ULONG DataBackFill,
                                          NET_BUFFER_ALLOCATE_MDL_HANDLER *AllocateMdlHandler);
VOID NdisAdvanceNetBufferDataStart(NET_BUFFER *NetBuffer, ULONG DataOffsetDelta, BOOLEAN FreeMdl,
                                   PVOID FreeMdlHandler);

/* ---- WFP types shared with user mode (fwptypes.h) ---- */
typedef UINT32 FWP_ACTION_TYPE;
#define FWP_ACTION_BLOCK (0x1 | 0x00001000)
#define FWP_ACTION_PERMIT (0x2 | 0x00001000)
#define FWP_ACTION_CONTINUE (0x6 | 0x00002000)
typedef struct FWP_BYTE_BLOB_ { UINT32 size; UINT8 *data; } FWP_BYTE_BLOB;
typedef struct FWP_BYTE_ARRAY16_ { UINT8 byteArray16[16]; } FWP_BYTE_ARRAY16;
typedef struct FWP_VALUE0_ {
    UINT32 type;
    union { UINT8 uint8; UINT16 uint16; UINT32 uint32; UINT64 *uint64; FWP_BYTE_ARRAY16 *byteArray16;
            FWP_BYTE_BLOB *byteBlob; };
} FWP_VALUE0;
#define FWP_CALLOUT_FLAG_CONDITIONAL_ON_FLOW 0x00000001
#define FWP_CONDITION_FLAG_IS_IPSEC_SECURED 0x00000080
typedef enum FWPM_SERVICE_STATE_ {
    FWPM_SERVICE_STOPPED, FWPM_SERVICE_START_PENDING, FWPM_SERVICE_STOP_PENDING, FWPM_SERVICE_RUNNING
} FWPM_SERVICE_STATE;

/* ---- fwpsk.h ---- */
typedef struct FWPS_INCOMING_VALUE0_ { FWP_VALUE0 value; } FWPS_INCOMING_VALUE0;
typedef struct FWPS_INCOMING_VALUES0_ {
    UINT16 layerId;
    UINT32 valueCount;
    FWPS_INCOMING_VALUE0 *incomingValue;
} FWPS_INCOMING_VALUES0;
typedef struct FWPS_INCOMING_METADATA_VALUES0_ {
    UINT32 currentMetadataValues;
    UINT32 flags;
    UINT64 reserved;
    UINT64 processId;
    UINT32 ipHeaderSize;
    UINT32 transportHeaderSize;
    UINT64 flowHandle;
    UINT64 transportEndpointHandle;
    SCOPE_ID remoteScopeId;
    WSACMSGHDR *controlData;
    ULONG controlDataLength;
    COMPARTMENT_ID compartmentId;
} FWPS_INCOMING_METADATA_VALUES0;
#define FWPS_IS_METADATA_FIELD_PRESENT(metadataValues, metadataField) \
    (((metadataValues)->currentMetadataValues & (metadataField)) == (metadataField))
#define FWPS_METADATA_FIELD_COMPARTMENT_ID 0x00000004
#define FWPS_METADATA_FIELD_IP_HEADER_SIZE 0x00000040
#define FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE 0x00000100
#define FWPS_METADATA_FIELD_FLOW_HANDLE 0x00000200
#define FWPS_METADATA_FIELD_PROCESS_ID 0x00001000
#define FWPS_METADATA_FIELD_REMOTE_SCOPE_ID 0x00004000
#define FWPS_METADATA_FIELD_TRANSPORT_ENDPOINT_HANDLE 0x00040000
#define FWPS_METADATA_FIELD_TRANSPORT_CONTROL_DATA 0x00100000
#define FWPS_METADATA_FIELD_ALE_CLASSIFY_REQUIRED 0x00800000
typedef struct FWPS_FILTER3_ { UINT64 filterId; UINT64 context; UINT32 flags; } FWPS_FILTER3;
typedef struct FWPS_CLASSIFY_OUT0_ {
    FWP_ACTION_TYPE actionType;
    UINT64 outContext;
    UINT64 filterId;
    UINT32 rights;
    UINT32 flags;
    UINT32 reserved;
} FWPS_CLASSIFY_OUT0;
#define FWPS_RIGHT_ACTION_WRITE 0x00000001
#define FWPS_CLASSIFY_OUT_FLAG_ABSORB 0x00000001
typedef enum FWPS_CALLOUT_NOTIFY_TYPE_ { FWPS_CALLOUT_NOTIFY_ADD_FILTER, FWPS_CALLOUT_NOTIFY_DELETE_FILTER }
    FWPS_CALLOUT_NOTIFY_TYPE;
typedef void(NTAPI *FWPS_CALLOUT_CLASSIFY_FN3)(const FWPS_INCOMING_VALUES0 *, const FWPS_INCOMING_METADATA_VALUES0 *,
                                              void *, const void *, const FWPS_FILTER3 *, UINT64,
                                              FWPS_CLASSIFY_OUT0 *);
typedef NTSTATUS(NTAPI *FWPS_CALLOUT_NOTIFY_FN3)(FWPS_CALLOUT_NOTIFY_TYPE, const GUID *, FWPS_FILTER3 *);
typedef void(NTAPI *FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0)(UINT16, UINT32, UINT64);
typedef struct FWPS_CALLOUT3_ {
    GUID calloutKey;
    UINT32 flags;
    FWPS_CALLOUT_CLASSIFY_FN3 classifyFn;
    FWPS_CALLOUT_NOTIFY_FN3 notifyFn;
    FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0 flowDeleteFn;
} FWPS_CALLOUT3;
enum {
    FWPS_LAYER_OUTBOUND_TRANSPORT_V4 = 12, FWPS_LAYER_OUTBOUND_TRANSPORT_V6 = 14,
    FWPS_LAYER_INBOUND_TRANSPORT_V4 = 8, FWPS_LAYER_INBOUND_TRANSPORT_V6 = 10,
    FWPS_LAYER_ALE_FLOW_ESTABLISHED_V4 = 40, FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6 = 42
};
enum { FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_APP_ID = 0, FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_APP_ID = 0 };
enum { FWPS_FIELD_OUTBOUND_TRANSPORT_V4_IP_REMOTE_ADDRESS = 3, FWPS_FIELD_OUTBOUND_TRANSPORT_V6_IP_REMOTE_ADDRESS = 3 };
enum {
    FWPS_FIELD_INBOUND_TRANSPORT_V4_FLAGS = 9, FWPS_FIELD_INBOUND_TRANSPORT_V6_FLAGS = 9,
    FWPS_FIELD_INBOUND_TRANSPORT_V4_INTERFACE_INDEX = 10, FWPS_FIELD_INBOUND_TRANSPORT_V6_INTERFACE_INDEX = 10,
    FWPS_FIELD_INBOUND_TRANSPORT_V4_SUB_INTERFACE_INDEX = 11, FWPS_FIELD_INBOUND_TRANSPORT_V6_SUB_INTERFACE_INDEX = 11
};
typedef enum FWPS_PACKET_INJECTION_STATE_ {
    FWPS_PACKET_NOT_INJECTED, FWPS_PACKET_INJECTED_BY_SELF, FWPS_PACKET_INJECTED_BY_OTHER,
    FWPS_PACKET_PREVIOUSLY_INJECTED_BY_SELF, FWPS_PACKET_INJECTION_STATE_MAX
} FWPS_PACKET_INJECTION_STATE;
#define FWPS_INJECTION_TYPE_TRANSPORT 0x00000002
typedef struct FWPS_TRANSPORT_SEND_PARAMS0_ {
    UCHAR *remoteAddress;
    SCOPE_ID remoteScopeId;
    WSACMSGHDR *controlData;
    ULONG controlDataLength;
} FWPS_TRANSPORT_SEND_PARAMS0;
typedef void(NTAPI *FWPS_INJECT_COMPLETE0)(void *context, NET_BUFFER_LIST *netBufferList, BOOLEAN dispatchLevel);
NTSTATUS FwpsCalloutRegister3(void *deviceObject, const FWPS_CALLOUT3 *callout, UINT32 *calloutId);
NTSTATUS FwpsCalloutUnregisterById0(const UINT32 calloutId);
NTSTATUS FwpsFlowAssociateContext0(UINT64 flowId, UINT16 layerId, UINT32 calloutId, UINT64 flowContext);
NTSTATUS FwpsFlowRemoveContext0(UINT64 flowId, UINT16 layerId, UINT32 calloutId);
NTSTATUS FwpsInjectionHandleCreate0(ADDRESS_FAMILY addressFamily, UINT32 flags, HANDLE *injectionHandle);
NTSTATUS FwpsInjectionHandleDestroy0(HANDLE injectionHandle);
FWPS_PACKET_INJECTION_STATE FwpsQueryPacketInjectionState0(HANDLE injectionHandle,
                                                           const NET_BUFFER_LIST *netBufferList,
                                                           HANDLE *injectionContext);
NTSTATUS FwpsAllocateCloneNetBufferList0(NET_BUFFER_LIST *originalNetBufferList, NDIS_HANDLE netBufferListPoolHandle,
                                         NDIS_HANDLE netBufferPoolHandle, ULONG allocateCloneFlags,
                                         NET_BUFFER_LIST **netBufferList);
void FwpsFreeCloneNetBufferList0(NET_BUFFER_LIST *netBufferList, ULONG freeCloneFlags);
NTSTATUS FwpsInjectTransportSendAsync0(HANDLE injectionHandle, HANDLE injectionContext, UINT64 endpointHandle,
                                       UINT32 flags, FWPS_TRANSPORT_SEND_PARAMS0 *sendArgs,
                                       ADDRESS_FAMILY addressFamily, COMPARTMENT_ID compartmentId,
                                       NET_BUFFER_LIST *netBufferList, FWPS_INJECT_COMPLETE0 completionFn,
                                       HANDLE completionContext);
NTSTATUS FwpsInjectTransportReceiveAsync0(HANDLE injectionHandle, HANDLE injectionContext, PVOID reserved,
                                          UINT32 flags, ADDRESS_FAMILY addressFamily, COMPARTMENT_ID compartmentId,
                                          IF_INDEX interfaceIndex, IF_INDEX subInterfaceIndex,
                                          NET_BUFFER_LIST *netBufferList, FWPS_INJECT_COMPLETE0 completionFn,
                                          HANDLE completionContext);

/* ---- fwpmk.h ---- */
typedef void(NTAPI *FWPM_SERVICE_STATE_CHANGE_CALLBACK0)(void *context, FWPM_SERVICE_STATE newState);
NTSTATUS FwpmBfeStateSubscribeChanges0(void *deviceObject, FWPM_SERVICE_STATE_CHANGE_CALLBACK0 callback,
                                       void *context, HANDLE *changeHandle);
NTSTATUS FwpmBfeStateUnsubscribeChanges0(HANDLE changeHandle);
FWPM_SERVICE_STATE FwpmBfeStateGet0(void);

/* ---- wdf.h (KMDF 1.15) ---- */
typedef struct WDFDRIVER__ *WDFDRIVER;
typedef struct WDFDEVICE__ *WDFDEVICE;
typedef struct WDFQUEUE__ *WDFQUEUE;
typedef struct WDFREQUEST__ *WDFREQUEST;
typedef struct WDFTIMER__ *WDFTIMER;
typedef struct WDFWAITLOCK__ *WDFWAITLOCK;
typedef struct WDFFILEOBJECT__ *WDFFILEOBJECT;
typedef void *WDFOBJECT;
typedef struct WDFDEVICE_INIT *PWDFDEVICE_INIT;
typedef enum _WDF_TRI_STATE { WdfFalse = FALSE, WdfTrue = TRUE, WdfUseDefault = 2 } WDF_TRI_STATE;
typedef struct _WDF_OBJECT_CONTEXT_TYPE_INFO { PCHAR ContextName; size_t ContextSize; } WDF_OBJECT_CONTEXT_TYPE_INFO;
typedef struct _WDF_OBJECT_ATTRIBUTES {
    ULONG Size;
    PVOID EvtCleanupCallback;
    PVOID EvtDestroyCallback;
    int ExecutionLevel;
    int SynchronizationScope;
    WDFOBJECT ParentObject;
    size_t ContextSizeOverride;
    const WDF_OBJECT_CONTEXT_TYPE_INFO *ContextTypeInfo;
} WDF_OBJECT_ATTRIBUTES, *PWDF_OBJECT_ATTRIBUTES;
#define WDF_NO_OBJECT_ATTRIBUTES ((PWDF_OBJECT_ATTRIBUTES)NULL)
#define WDF_NO_EVENT_CALLBACK NULL
void WDF_OBJECT_ATTRIBUTES_INIT(PWDF_OBJECT_ATTRIBUTES Attributes);
PVOID WdfObjectGetTypedContextWorker(WDFOBJECT Handle, const WDF_OBJECT_CONTEXT_TYPE_INFO *TypeInfo);
#define WDF_DECLARE_CONTEXT_TYPE_WITH_NAME(_contexttype, _castingfunction)                       \
    extern const WDF_OBJECT_CONTEXT_TYPE_INFO _WDF_##_contexttype##_TYPE_INFO;                   \
    static __inline _contexttype *_castingfunction(WDFOBJECT Handle)                            \
    {                                                                                            \
        return (_contexttype *)WdfObjectGetTypedContextWorker(Handle, &_WDF_##_contexttype##_TYPE_INFO); \
    }
#define WDF_OBJECT_ATTRIBUTES_INIT_CONTEXT_TYPE(_attributes, _contexttype) \
    (WDF_OBJECT_ATTRIBUTES_INIT(_attributes), (_attributes)->ContextTypeInfo = &_WDF_##_contexttype##_TYPE_INFO)

typedef void EVT_WDF_DRIVER_UNLOAD(WDFDRIVER Driver);
typedef EVT_WDF_DRIVER_UNLOAD *PFN_WDF_DRIVER_UNLOAD;
typedef enum _WDF_DRIVER_INIT_FLAGS { WdfDriverInitNonPnpDriver = 0x00000001 } WDF_DRIVER_INIT_FLAGS;
typedef struct _WDF_DRIVER_CONFIG {
    ULONG Size;
    PVOID EvtDriverDeviceAdd;
    PFN_WDF_DRIVER_UNLOAD EvtDriverUnload;
    ULONG DriverInitFlags;
    ULONG DriverPoolTag;
} WDF_DRIVER_CONFIG;
void WDF_DRIVER_CONFIG_INIT(WDF_DRIVER_CONFIG *Config, PVOID EvtDriverDeviceAdd);
NTSTATUS WdfDriverCreate(PDRIVER_OBJECT DriverObject, PCUNICODE_STRING RegistryPath,
                         PWDF_OBJECT_ATTRIBUTES DriverAttributes, WDF_DRIVER_CONFIG *DriverConfig, WDFDRIVER *Driver);

PWDFDEVICE_INIT WdfControlDeviceInitAllocate(WDFDRIVER Driver, const UNICODE_STRING *SDDLString);
void WdfDeviceInitFree(PWDFDEVICE_INIT DeviceInit);
void WdfDeviceInitSetDeviceType(PWDFDEVICE_INIT DeviceInit, DEVICE_TYPE DeviceType);
void WdfDeviceInitSetCharacteristics(PWDFDEVICE_INIT DeviceInit, ULONG DeviceCharacteristics, BOOLEAN OrInValues);
void WdfDeviceInitSetExclusive(PWDFDEVICE_INIT DeviceInit, BOOLEAN IsExclusive);
NTSTATUS WdfDeviceInitAssignName(PWDFDEVICE_INIT DeviceInit, PCUNICODE_STRING DeviceName);
typedef struct _WDF_FILEOBJECT_CONFIG { ULONG Size; PVOID EvtDeviceFileCreate; PVOID EvtFileClose; PVOID EvtFileCleanup; }
    WDF_FILEOBJECT_CONFIG;
void WDF_FILEOBJECT_CONFIG_INIT(WDF_FILEOBJECT_CONFIG *FileEventCallbacks, PVOID EvtDeviceFileCreate,
                                PVOID EvtFileClose, PVOID EvtFileCleanup);
void WdfDeviceInitSetFileObjectConfig(PWDFDEVICE_INIT DeviceInit, WDF_FILEOBJECT_CONFIG *FileObjectConfig,
                                      PWDF_OBJECT_ATTRIBUTES FileObjectAttributes);
NTSTATUS WdfDeviceCreate(PWDFDEVICE_INIT *DeviceInit, PWDF_OBJECT_ATTRIBUTES DeviceAttributes, WDFDEVICE *Device);
NTSTATUS WdfDeviceCreateSymbolicLink(WDFDEVICE Device, PCUNICODE_STRING SymbolicLinkName);
PDEVICE_OBJECT WdfDeviceWdmGetDeviceObject(WDFDEVICE Device);
void WdfControlFinishInitializing(WDFDEVICE Device);
void WdfObjectDelete(WDFOBJECT Object);

typedef void EVT_WDF_IO_QUEUE_IO_DEVICE_CONTROL(WDFQUEUE Queue, WDFREQUEST Request, size_t OutputBufferLength,
                                               size_t InputBufferLength, ULONG IoControlCode);
typedef enum _WDF_IO_QUEUE_DISPATCH_TYPE {
    WdfIoQueueDispatchSequential = 1, WdfIoQueueDispatchParallel, WdfIoQueueDispatchManual
} WDF_IO_QUEUE_DISPATCH_TYPE;
typedef struct _WDF_IO_QUEUE_CONFIG {
    ULONG Size;
    WDF_IO_QUEUE_DISPATCH_TYPE DispatchType;
    BOOLEAN DefaultQueue;
    EVT_WDF_IO_QUEUE_IO_DEVICE_CONTROL *EvtIoDeviceControl;
} WDF_IO_QUEUE_CONFIG;
void WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE(WDF_IO_QUEUE_CONFIG *Config, WDF_IO_QUEUE_DISPATCH_TYPE DispatchType);
void WDF_IO_QUEUE_CONFIG_INIT(WDF_IO_QUEUE_CONFIG *Config, WDF_IO_QUEUE_DISPATCH_TYPE DispatchType);
NTSTATUS WdfIoQueueCreate(WDFDEVICE Device, WDF_IO_QUEUE_CONFIG *Config, PWDF_OBJECT_ATTRIBUTES QueueAttributes,
                          WDFQUEUE *Queue);
NTSTATUS WdfIoQueueRetrieveNextRequest(WDFQUEUE Queue, WDFREQUEST *OutRequest);
NTSTATUS WdfRequestForwardToIoQueue(WDFREQUEST Request, WDFQUEUE DestinationQueue);
NTSTATUS WdfRequestRetrieveInputBuffer(WDFREQUEST Request, size_t MinimumRequiredLength, PVOID *Buffer,
                                       size_t *Length);
NTSTATUS WdfRequestRetrieveOutputBuffer(WDFREQUEST Request, size_t MinimumRequiredSize, PVOID *Buffer,
                                        size_t *Length);
WDFFILEOBJECT WdfRequestGetFileObject(WDFREQUEST Request);
void WdfRequestComplete(WDFREQUEST Request, NTSTATUS Status);
void WdfRequestCompleteWithInformation(WDFREQUEST Request, NTSTATUS Status, ULONG_PTR Information);

typedef void EVT_WDF_TIMER(WDFTIMER Timer);
typedef struct _WDF_TIMER_CONFIG {
    ULONG Size;
    EVT_WDF_TIMER *EvtTimerFunc;
    ULONG Period;
    BOOLEAN AutomaticSerialization;
    ULONG TolerableDelay;
    BOOLEAN UseHighResolutionTimer;
} WDF_TIMER_CONFIG;
void WDF_TIMER_CONFIG_INIT(WDF_TIMER_CONFIG *Config, EVT_WDF_TIMER *EvtTimerFunc);
NTSTATUS WdfTimerCreate(WDF_TIMER_CONFIG *Config, PWDF_OBJECT_ATTRIBUTES Attributes, WDFTIMER *Timer);
BOOLEAN WdfTimerStart(WDFTIMER Timer, LONGLONG DueTime);
BOOLEAN WdfTimerStop(WDFTIMER Timer, BOOLEAN Wait);

NTSTATUS WdfWaitLockCreate(PWDF_OBJECT_ATTRIBUTES LockAttributes, WDFWAITLOCK *Lock);
NTSTATUS WdfWaitLockAcquire(WDFWAITLOCK Lock, PLONGLONG Timeout);
void WdfWaitLockRelease(WDFWAITLOCK Lock);

#endif /* NC_WDK_STUB_CHECK_H */
