// Every string of the console in English and Traditional Chinese (Taiwan). The zh-TW table must
// have exactly the keys of the English one (the type checker enforces it), so no string can be
// left untranslated. Numbers, bytes and dates are formatted with Intl for the chosen locale.
import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from 'react';

const en = {
  appName: 'segma',
  language: 'Language',
  'nav.dashboard': 'Dashboard',
  'nav.workers': 'Workers & GPUs',
  'nav.deployments': 'Deployments',
  'nav.playground': 'Playground',
  'nav.apiKeys': 'API keys',
  'nav.usage': 'Usage',
  'nav.projects': 'Projects',
  'nav.users': 'Users',
  'nav.routes': 'Model routes',
  'nav.backends': 'Backends',
  'nav.modelFiles': 'Model files',
  'nav.menu': 'Menu',
  'auth.signIn': 'Sign in',
  'auth.signOut': 'Sign out',
  'auth.username': 'Username',
  'auth.password': 'Password',
  'auth.welcome': 'Sign in to segma',
  'auth.subtitle': 'GPU sharing and model serving for your data centre',
  'auth.changePassword': 'Change password',
  'auth.mustChange': 'You must choose a new password before you continue.',
  'auth.oldPassword': 'Current password',
  'auth.newPassword': 'New password',
  'auth.confirmPassword': 'Repeat the new password',
  'auth.mismatch': 'The two passwords differ',
  'auth.changed': 'Password changed',
  'auth.signedInAs': 'Signed in as {name}',
  'common.loading': 'Loading…',
  'common.create': 'Create',
  'common.cancel': 'Cancel',
  'common.delete': 'Delete',
  'common.save': 'Save',
  'common.close': 'Close',
  'common.name': 'Name',
  'common.state': 'State',
  'common.project': 'Project',
  'common.created': 'Created',
  'common.actions': 'Actions',
  'common.none': 'None',
  'common.never': 'Never',
  'common.all': 'All',
  'common.copy': 'Copy',
  'common.copied': 'Copied',
  'common.confirmDelete': 'Delete {name}? This cannot be undone.',
  'common.error': 'Something went wrong',
  'common.empty': 'Nothing here yet',
  'common.yes': 'Yes',
  'common.no': 'No',
  'common.live': 'Live',
  'common.reconnecting': 'Reconnecting…',
  'common.description': 'Description',
  'common.role': 'Role',
  'common.total': 'Total',
  'common.worker': 'Worker',
  'common.model': 'Model',
  'dash.title': 'Pool overview',
  'dash.workers': 'Workers',
  'dash.gpus': 'GPUs',
  'dash.deployments': 'Deployments',
  'dash.usageToday': 'Today',
  'dash.usage7': 'Last 7 days',
  'dash.usage30': 'Last 30 days',
  'dash.tokens': 'Tokens',
  'dash.requests': 'Requests',
  'dash.topProjects': 'Top projects by tokens',
  'dash.topModels': 'Top models by tokens',
  'dash.moreGpus': 'Showing {shown} of {total} GPUs.',
  'dash.allGpus': 'All GPUs are on the Workers & GPUs page',
  'gpu.vram': 'VRAM',
  'gpu.allocated': 'Allocated by segma',
  'gpu.external': 'Used outside segma',
  'gpu.used': 'Used (driver)',
  'gpu.free': 'Free',
  'gpu.utilization': 'Utilisation',
  'gpu.temperature': 'Temperature',
  'gpu.power': 'Power',
  'gpu.processes': 'Processes',
  'gpu.id': 'GPU',
  'workers.title': 'Workers',
  'workers.labels': 'Labels',
  'workers.heartbeat': 'Last heartbeat',
  'workers.address': 'Address',
  'workers.maintenance': 'Maintenance',
  'workers.maintenanceOn': 'Start maintenance',
  'workers.maintenanceOff': 'End maintenance',
  'workers.editLabels': 'Edit labels',
  'workers.labelsHint': 'One key=value per line',
  'workers.add': 'Add a worker',
  'workers.addHint': 'Run this on the new machine; it registers with this server:',
  'workers.gpusTitle': 'GPUs',
  'deploy.title': 'Deployments',
  'deploy.new': 'New deployment',
  'deploy.replicas': 'Replicas',
  'deploy.ready': 'Ready',
  'deploy.source': 'Source',
  'deploy.sourceType': 'Source type',
  'deploy.src.local_path': 'Local path',
  'deploy.src.huggingface': 'Hugging Face',
  'deploy.src.modelscope': 'ModelScope',
  'deploy.src.simulated': 'Simulated (engine-sim)',
  'deploy.path': 'Model path',
  'deploy.repo': 'Repository',
  'deploy.file': 'File (optional)',
  'deploy.paramsB': 'Parameters (billions)',
  'deploy.backend': 'Backend',
  'deploy.backendAuto': 'Automatic',
  'deploy.backendVersion': 'Backend version',
  'deploy.placement': 'Placement strategy',
  'deploy.spread': 'Spread',
  'deploy.binpack': 'Bin-pack',
  'deploy.gpuType': 'GPU type',
  'deploy.workerSelector': 'Worker selector (key=value, one per line)',
  'deploy.gpusPerReplica': 'GPUs per replica',
  'deploy.cpuOffload': 'CPU offloading',
  'deploy.distributed': 'Distribute across workers',
  'deploy.contextLength': 'Context length',
  'deploy.maxSeqs': 'Concurrent sequences',
  'deploy.extendedKv': 'Extended KV cache',
  'deploy.env': 'Environment (KEY=value, one per line)',
  'deploy.backendParams': 'Backend parameters (one per line)',
  'deploy.advanced': 'Advanced',
  'deploy.check': 'Check',
  'deploy.checkFirst': 'Check where it would run before you create it.',
  'deploy.fits': 'Fits',
  'deploy.doesNotFit': 'Does not fit',
  'deploy.wouldRunOn': 'Would run on {worker}, GPUs {gpus}',
  'deploy.claimPerGpu': 'Claim per GPU',
  'deploy.engine': 'Engine: {backend} {version}',
  'deploy.engineAutomatic': 'chosen automatically',
  'deploy.serves': 'Serves {sequences} concurrent sequences of {context} tokens',
  'deploy.servesLowered': 'Serves {sequences} concurrent sequences of {context} tokens (asked for {target})',
  'deploy.predicted': 'Expected with {users} users at once: {tps} tokens/s per user, first token in {ttft} ms (one user alone: {single} tokens/s)',
  'deploy.predictedExtrapolated': 'extrapolated beyond the measured model sizes',
  'deploy.noPrediction': 'No performance prediction: {reason}',
  'deploy.warnings': 'Warnings',
  'deploy.reasons': 'Why each worker was not chosen',
  'deploy.instances': 'Instances',
  'deploy.scale': 'Scale',
  'deploy.scaleTo': 'Replicas wanted',
  'deploy.port': 'Port',
  'deploy.restarts': 'Restarts',
  'deploy.message': 'Message',
  'deploy.logs': 'Logs',
  'deploy.follow': 'Follow',
  'deploy.logsOf': 'Log of instance {name}',
  'deploy.noLog': 'No log yet',
  'deploy.gpus': 'GPUs',
  'deploy.notFound': 'This deployment does not exist (any more).',
  'keys.title': 'API keys',
  'keys.new': 'New key',
  'keys.scope': 'Scope',
  'keys.scope.inference': 'Inference',
  'keys.scope.management': 'Management',
  'keys.scope.all': 'All',
  'keys.allowedModels': 'Allowed models (comma-separated, empty = all)',
  'keys.expiresAt': 'Expires',
  'keys.expiresDays': 'Expires after (days, empty = never)',
  'keys.prefix': 'Prefix',
  'keys.lastUsed': 'Last used',
  'keys.revoke': 'Revoke',
  'keys.revoked': 'Revoked',
  'keys.active': 'Active',
  'keys.secretOnce': 'Copy this secret now: it is shown only once.',
  'keys.rpm': 'Requests per minute (empty = no limit)',
  'play.title': 'Playground',
  'play.model': 'Model',
  'play.key': 'API key',
  'play.keyTemp': 'A temporary key (created for you, 1 hour)',
  'play.keyPaste': 'Paste a key',
  'play.system': 'System prompt',
  'play.temperature': 'Temperature',
  'play.maxTokens': 'Max tokens',
  'play.stop': 'Stop sequences (comma-separated)',
  'play.prompt': 'Your message',
  'play.send': 'Send',
  'play.stopGen': 'Stop',
  'play.ttft': 'Time to first token',
  'play.tps': 'Tokens/s',
  'play.tokens': 'Tokens',
  'play.compare': 'Compare with a second model',
  'play.you': 'You',
  'play.assistant': 'Assistant',
  'play.clear': 'Clear',
  'projects.title': 'Projects',
  'projects.new': 'New project',
  'projects.members': 'Members',
  'projects.addMember': 'Add member',
  'projects.quotas': 'Quotas',
  'projects.maxGpus': 'Max GPUs',
  'projects.maxVram': 'Max VRAM (GiB)',
  'projects.maxInstances': 'Max instances',
  'projects.limits': 'Gateway limits',
  'projects.unlimited': 'Unlimited',
  'users.title': 'Users',
  'users.new': 'New user',
  'users.fullName': 'Full name',
  'users.admin': 'Admin',
  'users.active': 'Active',
  'users.requireChange': 'Must change password',
  'usage.title': 'Usage',
  'usage.groupBy': 'Group by',
  'usage.by.project': 'Project',
  'usage.by.model': 'Model',
  'usage.by.key': 'API key',
  'usage.by.user': 'User',
  'usage.from': 'From',
  'usage.to': 'To',
  'usage.csv': 'Export CSV',
  'usage.promptTokens': 'Prompt tokens',
  'usage.completionTokens': 'Completion tokens',
  'usage.errors': 'Errors',
  'usage.chart': 'Tokens by {group}',
  'routes.title': 'Model routes',
  'routes.targets': 'Targets',
  'routes.weight': 'Weight',
  'routes.fallback': 'fallback',
  'backends.title': 'Backends',
  'backends.builtIn': 'Built in',
  'backends.custom': 'Custom',
  'backends.versions': 'Versions',
  'backends.default': 'Default version',
  'backends.formats': 'Model formats',
  'files.title': 'Model files',
  'files.source': 'Source',
  'files.size': 'Size',
  'files.progress': 'Progress',
  'files.path': 'Local path',
  'role.admin': 'Platform admin',
  'role.project-admin': 'Project admin',
  'role.member': 'Member',
  'role.viewer': 'Viewer',
  'notFound': 'This page does not exist.',
} as const;

export type MessageKey = keyof typeof en;

const zhTW: Record<MessageKey, string> = {
  appName: 'segma',
  language: '語言',
  'nav.dashboard': '總覽',
  'nav.workers': '工作節點與 GPU',
  'nav.deployments': '模型部署',
  'nav.playground': '試用區',
  'nav.apiKeys': 'API 金鑰',
  'nav.usage': '用量',
  'nav.projects': '專案',
  'nav.users': '使用者',
  'nav.routes': '模型路由',
  'nav.backends': '推論後端',
  'nav.modelFiles': '模型檔案',
  'nav.menu': '選單',
  'auth.signIn': '登入',
  'auth.signOut': '登出',
  'auth.username': '使用者名稱',
  'auth.password': '密碼',
  'auth.welcome': '登入 segma',
  'auth.subtitle': '資料中心的 GPU 共享與模型服務平台',
  'auth.changePassword': '變更密碼',
  'auth.mustChange': '繼續之前，請先設定新密碼。',
  'auth.oldPassword': '目前密碼',
  'auth.newPassword': '新密碼',
  'auth.confirmPassword': '再次輸入新密碼',
  'auth.mismatch': '兩次輸入的密碼不一致',
  'auth.changed': '密碼已變更',
  'auth.signedInAs': '已登入：{name}',
  'common.loading': '載入中…',
  'common.create': '建立',
  'common.cancel': '取消',
  'common.delete': '刪除',
  'common.save': '儲存',
  'common.close': '關閉',
  'common.name': '名稱',
  'common.state': '狀態',
  'common.project': '專案',
  'common.created': '建立時間',
  'common.actions': '操作',
  'common.none': '無',
  'common.never': '從未',
  'common.all': '全部',
  'common.copy': '複製',
  'common.copied': '已複製',
  'common.confirmDelete': '確定刪除 {name}？此操作無法復原。',
  'common.error': '發生錯誤',
  'common.empty': '目前沒有資料',
  'common.yes': '是',
  'common.no': '否',
  'common.live': '即時',
  'common.reconnecting': '重新連線中…',
  'common.description': '說明',
  'common.role': '角色',
  'common.total': '總計',
  'common.worker': '工作節點',
  'common.model': '模型',
  'dash.title': '資源池總覽',
  'dash.workers': '工作節點',
  'dash.gpus': 'GPU',
  'dash.deployments': '模型部署',
  'dash.usageToday': '今日',
  'dash.usage7': '近 7 天',
  'dash.usage30': '近 30 天',
  'dash.tokens': 'Token 數',
  'dash.requests': '請求數',
  'dash.topProjects': 'Token 用量最多的專案',
  'dash.moreGpus': '顯示 {shown} / {total} 張 GPU。',
  'dash.allGpus': '所有 GPU 請見「工作節點與 GPU」頁面',
  'dash.topModels': 'Token 用量最多的模型',
  'gpu.vram': '顯示記憶體',
  'gpu.allocated': 'segma 已配置',
  'gpu.external': 'segma 以外使用',
  'gpu.used': '已使用（驅動程式）',
  'gpu.free': '可用',
  'gpu.utilization': '使用率',
  'gpu.temperature': '溫度',
  'gpu.power': '功耗',
  'gpu.processes': '行程',
  'gpu.id': 'GPU',
  'workers.title': '工作節點',
  'workers.labels': '標籤',
  'workers.heartbeat': '最後心跳',
  'workers.address': '位址',
  'workers.maintenance': '維護模式',
  'workers.maintenanceOn': '進入維護',
  'workers.maintenanceOff': '結束維護',
  'workers.editLabels': '編輯標籤',
  'workers.labelsHint': '每行一個 key=value',
  'workers.add': '新增工作節點',
  'workers.addHint': '在新機器上執行以下指令，向此伺服器註冊：',
  'workers.gpusTitle': 'GPU',
  'deploy.title': '模型部署',
  'deploy.new': '新增部署',
  'deploy.replicas': '副本數',
  'deploy.ready': '就緒',
  'deploy.source': '來源',
  'deploy.sourceType': '來源類型',
  'deploy.src.local_path': '本機路徑',
  'deploy.src.huggingface': 'Hugging Face',
  'deploy.src.modelscope': 'ModelScope',
  'deploy.src.simulated': '模擬（engine-sim）',
  'deploy.path': '模型路徑',
  'deploy.repo': '儲存庫',
  'deploy.file': '檔案（選填）',
  'deploy.paramsB': '參數量（十億）',
  'deploy.backend': '推論後端',
  'deploy.backendAuto': '自動選擇',
  'deploy.backendVersion': '後端版本',
  'deploy.placement': '排程策略',
  'deploy.spread': '分散',
  'deploy.binpack': '集中',
  'deploy.gpuType': 'GPU 型號',
  'deploy.workerSelector': '節點選擇器（每行一個 key=value）',
  'deploy.gpusPerReplica': '每個副本的 GPU 數',
  'deploy.cpuOffload': 'CPU 卸載',
  'deploy.distributed': '跨節點分散推論',
  'deploy.contextLength': '上下文長度',
  'deploy.maxSeqs': '同時序列數',
  'deploy.extendedKv': '延伸 KV 快取',
  'deploy.env': '環境變數（每行一個 KEY=value）',
  'deploy.backendParams': '後端參數（每行一個）',
  'deploy.advanced': '進階設定',
  'deploy.check': '檢查',
  'deploy.checkFirst': '建立之前，先檢查會排程到哪裡。',
  'deploy.fits': '可以排程',
  'deploy.doesNotFit': '無法排程',
  'deploy.wouldRunOn': '將執行於 {worker}，GPU {gpus}',
  'deploy.claimPerGpu': '每張 GPU 的配置量',
  'deploy.engine': '推論引擎：{backend} {version}',
  'deploy.engineAutomatic': '自動選擇',
  'deploy.serves': '可同時服務 {sequences} 個序列，每個 {context} 個 token',
  'deploy.servesLowered': '可同時服務 {sequences} 個序列，每個 {context} 個 token（要求 {target} 個）',
  'deploy.predicted': '預估 {users} 位使用者同時使用：每位每秒 {tps} 個 token，首個 token {ttft} 毫秒（單一使用者：每秒 {single} 個 token）',
  'deploy.predictedExtrapolated': '超出已量測的模型大小，為外推值',
  'deploy.noPrediction': '無效能預估：{reason}',
  'deploy.warnings': '警告',
  'deploy.reasons': '各工作節點未被選中的原因',
  'deploy.instances': '執行個體',
  'deploy.scale': '調整規模',
  'deploy.scaleTo': '期望副本數',
  'deploy.port': '連接埠',
  'deploy.restarts': '重新啟動次數',
  'deploy.message': '訊息',
  'deploy.logs': '日誌',
  'deploy.follow': '持續追蹤',
  'deploy.logsOf': '執行個體 {name} 的日誌',
  'deploy.noLog': '尚無日誌',
  'deploy.gpus': 'GPU',
  'deploy.notFound': '此部署不存在（或已刪除）。',
  'keys.title': 'API 金鑰',
  'keys.new': '新增金鑰',
  'keys.scope': '權限範圍',
  'keys.scope.inference': '推論',
  'keys.scope.management': '管理',
  'keys.scope.all': '全部',
  'keys.allowedModels': '允許的模型（以逗號分隔，空白表示全部）',
  'keys.expiresAt': '到期',
  'keys.expiresDays': '幾天後到期（空白表示永不到期）',
  'keys.prefix': '前綴',
  'keys.lastUsed': '最後使用',
  'keys.revoke': '撤銷',
  'keys.revoked': '已撤銷',
  'keys.active': '有效',
  'keys.secretOnce': '請立即複製此密鑰：它只會顯示這一次。',
  'keys.rpm': '每分鐘請求上限（空白表示不限）',
  'play.title': '試用區',
  'play.model': '模型',
  'play.key': 'API 金鑰',
  'play.keyTemp': '臨時金鑰（自動建立，有效 1 小時）',
  'play.keyPaste': '貼上金鑰',
  'play.system': '系統提示詞',
  'play.temperature': '溫度',
  'play.maxTokens': '最大 Token 數',
  'play.stop': '停止序列（以逗號分隔）',
  'play.prompt': '您的訊息',
  'play.send': '送出',
  'play.stopGen': '停止',
  'play.ttft': '首個 Token 延遲',
  'play.tps': 'Token/秒',
  'play.tokens': 'Token 數',
  'play.compare': '與第二個模型比較',
  'play.you': '您',
  'play.assistant': '助理',
  'play.clear': '清除',
  'projects.title': '專案',
  'projects.new': '新增專案',
  'projects.members': '成員',
  'projects.addMember': '新增成員',
  'projects.quotas': '配額',
  'projects.maxGpus': 'GPU 上限',
  'projects.maxVram': '顯示記憶體上限（GiB）',
  'projects.maxInstances': '執行個體上限',
  'projects.limits': '閘道限制',
  'projects.unlimited': '不限',
  'users.title': '使用者',
  'users.new': '新增使用者',
  'users.fullName': '全名',
  'users.admin': '管理員',
  'users.active': '啟用',
  'users.requireChange': '須變更密碼',
  'usage.title': '用量',
  'usage.groupBy': '分組依據',
  'usage.by.project': '專案',
  'usage.by.model': '模型',
  'usage.by.key': 'API 金鑰',
  'usage.by.user': '使用者',
  'usage.from': '起始',
  'usage.to': '結束',
  'usage.csv': '匯出 CSV',
  'usage.promptTokens': '提示 Token',
  'usage.completionTokens': '生成 Token',
  'usage.errors': '錯誤',
  'usage.chart': '依{group}統計的 Token',
  'routes.title': '模型路由',
  'routes.targets': '目標',
  'routes.weight': '權重',
  'routes.fallback': '備援',
  'backends.title': '推論後端',
  'backends.builtIn': '內建',
  'backends.custom': '自訂',
  'backends.versions': '版本',
  'backends.default': '預設版本',
  'backends.formats': '模型格式',
  'files.title': '模型檔案',
  'files.source': '來源',
  'files.size': '大小',
  'files.progress': '進度',
  'files.path': '本機路徑',
  'role.admin': '平台管理員',
  'role.project-admin': '專案管理員',
  'role.member': '成員',
  'role.viewer': '檢視者',
  notFound: '此頁面不存在。',
};

export type Locale = 'en' | 'zh-TW';
export const LOCALES: { value: Locale; label: string }[] = [
  { value: 'zh-TW', label: '繁體中文' },
  { value: 'en', label: 'English' },
];
const TABLES: Record<Locale, Record<MessageKey, string>> = { en, 'zh-TW': zhTW };
const STORAGE_KEY = 'segma.locale';

function initialLocale(): Locale {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved === 'en' || saved === 'zh-TW') return saved;
  return navigator.language.toLowerCase().startsWith('zh') ? 'zh-TW' : 'en';
}

export interface I18n {
  locale: Locale;
  setLocale: (l: Locale) => void;
  t: (key: MessageKey, vars?: Record<string, string | number>) => string;
  num: (n: number, digits?: number) => string;
  bytes: (n: number) => string;
  date: (iso: string | null | undefined) => string;
  ago: (iso: string | null | undefined) => string;
}

const Ctx = createContext<I18n | null>(null);

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

// Intl formatters are costly to create (the first one of a page takes 30-50 ms on a loaded core:
// chromium loads the locale's data), so numbers are formatted by hand, and the date formatters
// are made on first use and kept.
const formatters = new Map<string, Intl.DateTimeFormat | Intl.RelativeTimeFormat>();
function cached<F extends Intl.DateTimeFormat | Intl.RelativeTimeFormat>(key: string, make: () => F): F {
  let f = formatters.get(key) as F | undefined;
  if (!f) {
    f = make();
    formatters.set(key, f);
  }
  return f;
}

// n with at least `min` and at most `max` fraction digits, exactly as Intl.NumberFormat(locale)
// writes it: both locales write 1,234.5 (Latin digits, "," between groups of three, "." before
// the decimals), and Intl rounds the shortest decimal that reads back as n (1.15 → 1.2), half
// away from zero. Values written in exponent form, and NaN and ±∞, go to Intl itself.
export function formatNumber(locale: Locale, n: number, min: number, max: number): string {
  const abs = String(Math.abs(n));
  if (!/^\d+(\.\d+)?$/.test(abs)) {
    return new Intl.NumberFormat(locale, { minimumFractionDigits: min, maximumFractionDigits: max }).format(n);
  }
  const [int, frac = ''] = abs.split('.');
  let digits = int + frac.slice(0, max).padEnd(max, '0');
  if (frac.length > max && frac[max] >= '5') {
    // Add one in the last kept place, carrying leftwards.
    const d = digits.split('');
    let i = d.length - 1;
    while (i >= 0 && d[i] === '9') d[i--] = '0';
    if (i >= 0) d[i] = String(Number(d[i]) + 1);
    else d.unshift('1');
    digits = d.join('');
  }
  let whole = digits.slice(0, digits.length - max);
  let fraction = digits.slice(digits.length - max);
  while (fraction.length > min && fraction.endsWith('0')) fraction = fraction.slice(0, -1);
  whole = whole.replace(/\B(?=(\d{3})+$)/g, ',');
  const sign = n < 0 || Object.is(n, -0) ? '-' : '';
  return `${sign}${whole}${fraction ? `.${fraction}` : ''}`;
}

export function formatBytes(locale: Locale, n: number): string {
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = i === 0 ? 0 : 1;
  return `${formatNumber(locale, v, digits, digits)} ${UNITS[i]}`;
}

export function I18nProvider({ children }: { children: ReactNode }) {
  const [locale, setLocaleState] = useState<Locale>(initialLocale);
  const setLocale = useCallback((l: Locale) => {
    localStorage.setItem(STORAGE_KEY, l);
    document.documentElement.lang = l;
    setLocaleState(l);
  }, []);
  const value = useMemo<I18n>(() => {
    document.documentElement.lang = locale;
    const table = TABLES[locale];
    const rtf = () => cached(`r/${locale}`, () => new Intl.RelativeTimeFormat(locale, { numeric: 'auto' }));
    const dtf = () => cached(`d/${locale}`, () => new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' }));
    return {
      locale,
      setLocale,
      t: (key, vars) => {
        let s: string = table[key] ?? key;
        if (vars) for (const [k, v] of Object.entries(vars)) s = s.replace(`{${k}}`, String(v));
        return s;
      },
      num: (n, digits = 0) => formatNumber(locale, n, 0, digits),
      bytes: (n) => formatBytes(locale, n),
      date: (iso) => (iso ? dtf().format(new Date(iso)) : '—'),
      ago: (iso) => {
        if (!iso) return table['common.never'];
        const s = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
        if (Math.abs(s) < 60) return rtf().format(s, 'second');
        if (Math.abs(s) < 3600) return rtf().format(Math.round(s / 60), 'minute');
        if (Math.abs(s) < 86400) return rtf().format(Math.round(s / 3600), 'hour');
        return rtf().format(Math.round(s / 86400), 'day');
      },
    };
  }, [locale, setLocale]);
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useI18n(): I18n {
  const v = useContext(Ctx);
  if (!v) throw new Error('useI18n outside I18nProvider');
  return v;
}
