/** The grader kit: what every grader imports. */
export { defineGrader } from "./grader.ts";
export type { Check, CheckContext, ExportSpec, Grader } from "./grader.ts";
export { CheckFailure, LabError, fail } from "./fail.ts";
export { createRng, type Rng } from "./rng.ts";
export { Namespace } from "./names.ts";
export { RabbitKit } from "./rabbit.ts";
export { KafkaKit } from "./kafka.ts";
export { describe as describeValue } from "./describe.ts";
export { ChaosProxy, isConfirm, type AmqpFrame, type Direction } from "./proxy.ts";
export { Host, HostGone, sync, type HostEnd, type Remote } from "./host.ts";
export { VirtualClock, type Clock } from "./clock.ts";
export { History, type HistoryEvent, type HistoryKind } from "./history.ts";
export { waitForTopicLeaders, type TopicSpec } from "./kafka.ts";
export { QueueObserver, amqpCode, brokerText } from "./rabbit-observer.ts";
export {
  KafkaProxy,
  ApiKey,
  DURABLE_APIS,
  apiName,
  decodeEndTxn,
  decodeFetch,
  decodeJoinGroup,
  decodeOffsetCommit,
  decodeProduceHeader,
  decodeTxnOffsetCommit,
  describeRequest,
  leaveGroup,
  parseRequestHeader,
  type CommitEntry,
  type FetchSeen,
  type JoinGroupSeen,
  type KafkaProxyOptions,
  type KafkaRequest,
  type OffsetCommitSeen,
  type RequestHandler,
  type TxnOffsetCommitSeen,
  type Verdict,
} from "./kafka-proxy.ts";
export { decodeMethod, decodeContentHeader, isSettlement, type AmqpMethod, type BasicProperties, type ContentHeader } from "./amqp-methods.ts";
export { WireDeliveries, type Delivery, type Settlement, type SettleHow, type ClientRequest } from "./amqp-deliveries.ts";
export { Gate } from "./proxy.ts";
export { WalPin, firstCommitWhere, sharedLeftovers, walCommitEnds, walCommitEndsOf, walPathOf, writeCrashImage } from "./crash-image.ts";
export { WireTopology, decodeTopology, type TopologyMethod, type QueueDeclareSeen, type BindSeen, type ExchangeDeclareSeen } from "./amqp-topology.ts";
export { WirePublishes, type WirePublish, type ConfirmSeen } from "./amqp-publishes.ts";
export { decodeFieldTable, decodeMessageHeaders, type FieldTable } from "./amqp-table.ts";
export { Pulse } from "./pulse.ts";
export { newTimers, type PendingTimer } from "./timers.ts";
export { processTree } from "../grading/proc-tree.ts";
